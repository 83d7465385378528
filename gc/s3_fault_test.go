package gc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/s3proxy"
	"chunkgc/internal/testkit/s3server"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/objstore"
)

// s3Real is an S3 datastore on versitygw behind the fault proxy: the GC's
// client talks to the proxy (plain HTTP, the test-only option), the test
// uploads directly. Its chunks: refs referenced by an index and cached,
// garbage objects 72 h old, half of them with an old cache file.
type s3Real struct {
	*s3Fixture
	srv          *s3server.Server
	proxy        *s3proxy.Proxy
	client       *objstore.Client
	refs         []blob.Digest
	garbage      []string // keys
	garbageLocal []string // cache files
	// killed, when set by killOn, is closed once the server was killed
	// (and restarted): the test waits for it before it touches the
	// server again, since only the network orders the kill before the
	// run's end.
	killed chan struct{}
}

const s3PageSize = 100

func newS3Real(t *testing.T, refs, garbage int) *s3Real {
	t.Helper()
	srv := s3server.Start(t, s3server.Options{})
	proxy := s3proxy.Start(t, "http://"+srv.Addr)
	ep := srv.Endpoint()
	u, err := url.Parse("http://" + proxy.Addr)
	rtest.OK(t, err)
	ep.Endpoint = u.Hostname()
	ep.Port, _ = strconv.Atoi(u.Port())
	client, err := objstore.New(ep, srv.Bucket, objstore.Options{Log: zaptest.NewLogger(t), TestOnlyPlainHTTP: true,
		ListPageSize: s3PageSize, MaxBackoff: 20 * time.Millisecond})
	rtest.OK(t, err)
	direct, err := objstore.New(srv.Endpoint(), srv.Bucket, objstore.Options{TestOnlyPlainHTTP: true})
	rtest.OK(t, err)
	s := &s3Real{s3Fixture: newS3Fixture(t), srv: srv, proxy: proxy, client: client}
	const old = 72 * time.Hour
	put := func(d blob.Digest) string {
		k := s.key(d, "")
		_, err := direct.PutIfAbsent(context.Background(), k, []byte(k))
		rtest.OK(t, err)
		srv.Age(k, time.Now().Add(-old))
		return k
	}
	for i := range refs {
		n := fmt.Sprint("ref ", i)
		s.st.Add(storetest.Chunk(n, storetest.Size(64), storetest.Age(old)))
		s.refs = append(s.refs, s.st.Digest(n))
		put(s.st.Digest(n))
	}
	const index = "vm/100/2025-01-01T00:00:00Z/drive-scsi0.img.fidx"
	b, err := os.ReadFile(s.st.Snapshot(filepath.Dir(index), filepath.Base(index), s.refs...))
	rtest.OK(t, err)
	rtest.OK(t, direct.Put(context.Background(), objstore.ContentKey("store1", index), b)) // as an ingest uploads it
	for i := range garbage {
		d := s.digest()
		s.garbage = append(s.garbage, put(d))
		if i%2 == 0 {
			s.garbageLocal = append(s.garbageLocal, s.local(d, "", 0, old))
		}
	}
	return s
}

func (s *s3Real) run(t *testing.T) (*Status, error) {
	t.Helper()
	return s.s3Fixture.run(t, s.client)
}

func (s *s3Real) hasObject(k string) bool {
	_, err := os.Stat(s.srv.ObjectPath(k))
	return err == nil
}

// invariant: every chunk of every index exists as an object, and no cache
// file outlives its object.
func (s *s3Real) invariant(t *testing.T) {
	t.Helper()
	storetest.CheckObjects(t, s.cache.Base(), func(d blob.Digest) bool { return s.hasObject(s.key(d, "")) })
	for i, p := range s.garbageLocal {
		if exists(p) && !s.hasObject(s.garbage[2*i]) {
			t.Errorf("cache file %s outlived its object", p)
		}
	}
}

// TestS3FaultProxy runs an S3 GC through each fault — 503 SlowDown at 30 %
// and 70 % of the requests, a DeleteObjects answer lost after the server
// deleted, +2 s on a list page, a list page truncated mid-XML, a
// connection reset mid-page, kill -9 of the server between list pages
// (restarted on the same dir before the next one) and with a
// DeleteObjects in flight — and asserts that the run finishes or fails,
// never loses a referenced chunk or leaves a cache file without its
// object, and that a second run without faults converges: every garbage
// object is gone.
func TestS3FaultProxy(t *testing.T) {
	for _, tt := range []struct {
		name string
		rule func(s *s3Real) s3proxy.Rule
		// after, when set, runs after the faulty run (a restart).
		after func(s *s3Real)
	}{
		{"503 at 30%", func(s *s3Real) s3proxy.Rule { return slowDown(0.3) }, nil},
		{"503 at 70%", func(s *s3Real) s3proxy.Rule { return slowDown(0.7) }, nil},
		{"DeleteObjects answer lost", func(s *s3Real) s3proxy.Rule {
			return s3proxy.Every(func(n int) bool { return n == 0 }, s3proxy.Fault{DropResponse: true}, s3proxy.OpBatch)
		}, nil},
		// LIST 0 is the run's listing of <store>/.cnt/ (s3Indexes), the
		// chunk listing's pages come after it.
		{"+2 s on a list page", func(s *s3Real) s3proxy.Rule {
			return s3proxy.Every(func(n int) bool { return n == 2 }, s3proxy.Fault{Delay: 2 * time.Second}, s3proxy.OpList)
		}, nil},
		{"list page truncated", func(s *s3Real) s3proxy.Rule {
			return s3proxy.Every(func(n int) bool { return n == 2 }, s3proxy.Fault{TruncateBody: 700}, s3proxy.OpList)
		}, nil},
		{"reset mid-page", func(s *s3Real) s3proxy.Rule {
			return s3proxy.Every(func(n int) bool { return n == 3 }, s3proxy.Fault{TruncateBody: 1500, ResetBody: true}, s3proxy.OpList)
		}, nil},
		{"kill -9 between list pages", func(s *s3Real) s3proxy.Rule {
			return killOn(s, s3proxy.OpList, 3, true)
		}, nil},
		{"kill -9 with DeleteObjects in flight", func(s *s3Real) s3proxy.Rule {
			return killOn(s, s3proxy.OpBatch, 1, false)
		}, func(s *s3Real) { s.srv.Restart() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newS3Real(t, 300, 250)
			s.proxy.SetRule(tt.rule(s))
			_, err := s.run(t)
			t.Logf("faulty run: %v (requests %s, faults %d)", err, s3proxy.String(s.proxy.Counts()), s.proxy.Faults())
			if s.killed != nil {
				<-s.killed
			}
			if tt.after != nil {
				tt.after(s)
			}
			s.invariant(t)
			s.proxy.SetRule(nil)
			_, err = s.run(t)
			rtest.OK(t, err)
			s.invariant(t)
			for _, k := range s.garbage {
				if s.hasObject(k) {
					t.Errorf("garbage %s survived the second run", k)
				}
			}
		})
	}
}

// killOn holds the n-th request of op in the proxy, kills the server with
// SIGKILL meanwhile (restarting it on the same dir when restart is set),
// then lets the request go on: to the restarted server, or to none.
func killOn(s *s3Real, op s3proxy.Op, n int, restart bool) s3proxy.Rule {
	hold, held := make(chan struct{}), make(chan struct{})
	s.killed = make(chan struct{})
	go func() {
		defer close(s.killed)
		<-held
		s.srv.Kill()
		if restart {
			s.srv.Restart()
		}
		close(hold)
	}()
	return s3proxy.Every(func(i int) bool { return i == n }, s3proxy.Fault{Hold: hold, Held: held}, op)
}

// slowDown answers 503 SlowDown to a share of all requests, seeded so that
// a failure can be replayed.
func slowDown(share float64) s3proxy.Rule {
	rng := rand.New(rand.NewPCG(1, uint64(share*100)))
	return func(op s3proxy.Op, n int, r *http.Request) s3proxy.Fault {
		if rng.Float64() < share {
			return s3proxy.Fault{SlowDown: true}
		}
		return s3proxy.Fault{}
	}
}

// TestS3RequestBudget: a GC of 550 objects (250 garbage) in pages of 100
// sends, as the proxy counts them, one HEAD (the server's clock), one GET
// (.in-use), the LIST requests of its key ranges (s3ListPages: one listing
// ⌈550/100⌉, 16 ranges at most ⌈550/100⌉ + 16) and ⌈250/100⌉ POST requests
// (the ranges share full batches), and nothing else.
func TestS3RequestBudget(t *testing.T) {
	for _, ranges := range []int{1, 16} {
		t.Run(fmt.Sprint("ranges=", ranges), func(t *testing.T) {
			s := newS3Real(t, 300, 250)
			s.ranges = ranges
			s.proxy.SetRule(nil)
			st, err := s.run(t)
			rtest.OK(t, err)
			keys := slices.Clone(s.garbage)
			for _, d := range s.refs {
				keys = append(keys, s.key(d, ""))
			}
			lists := s3ListPages(keys, s3PageSize, ranges)
			if bound := (len(keys)+s3PageSize-1)/s3PageSize + ranges; lists > bound || ranges == 1 && lists != 6 {
				t.Fatalf("s3ListPages %d for %d ranges: beyond the bound", lists, ranges)
			}
			// One LIST more: <store>/.cnt/, its one index (s3Indexes).
			want := map[s3proxy.Op]int{s3proxy.OpHead: 1, s3proxy.OpGet: 1, s3proxy.OpList: 1 + lists, s3proxy.OpBatch: 3}
			rtest.Equal(t, "requests", want, s.proxy.Counts())
			rtest.Equal(t, "removed", int64(250), st.RemovedChunks)
			s.invariant(t)
		})
	}
}
