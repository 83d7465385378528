package leakcheck

import (
	"testing"
)

func parked(stop chan struct{}) { <-stop }

func TestLeakedFindsAndForgets(t *testing.T) {
	stop := make(chan struct{})
	go parked(stop)
	if g := Leaked("leakcheck.TestLeakedFindsAndForgets"); len(g) != 1 {
		t.Fatalf("want the parked goroutine, got %d stacks", len(g))
	}
	close(stop)
	if g := Leaked("leakcheck.TestLeakedFindsAndForgets"); len(g) != 0 {
		t.Fatalf("a finished goroutine is still reported: %v", g)
	}
}
