package adapt

import "time"

// climber decides the limit from throughput samples; it is the controller's
// logic without its clock and goroutine (see the package doc, "How").
type climber struct {
	cfg       *Config
	state     climbState
	base      int     // the accepted limit
	baseRate  float64 // its rate, units per second
	grew      bool    // a doubling paid in this search: do not search down
	nextProbe time.Time
	probeUp   bool // direction of the next hold probe
}

type climbState int

const (
	climbFirst climbState = iota // no sample yet
	climbUp                      // the current limit is base doubled
	climbDown                    // the current limit is base halved
	climbHold                    // the current limit is base
)

// sample takes the rate measured at limit cur and returns the next limit and
// why it was chosen.
func (c *climber) sample(cur int, rate float64, now time.Time) (int, string) {
	switch c.state {
	case climbFirst:
		c.base, c.baseRate = cur, rate
		return c.up(now, false)
	case climbUp:
		if rate >= c.baseRate*(1+c.cfg.Gain) {
			c.base, c.baseRate = cur, rate
			return c.up(now, true)
		}
		if !c.grew {
			return c.down(now)
		}
		return c.hold(now, "a doubling did not pay: back")
	case climbDown:
		// Against the best rate, not the last: halvings that each lose
		// a little must not add up to a large loss.
		if rate >= c.baseRate*(1-c.cfg.Loss) {
			c.base, c.baseRate = cur, max(c.baseRate, rate)
			return c.down(now)
		}
		return c.hold(now, "halving cost throughput: back")
	}
	// climbHold: track the rate at base; probe one step now and then.
	if cur == c.base {
		c.baseRate = (c.baseRate + rate) / 2
	}
	if now.Before(c.nextProbe) {
		return c.base, ""
	}
	c.probeUp = !c.probeUp
	if c.probeUp {
		return c.up(now, true)
	}
	c.grew = true // a probe down that fails holds, it does not search up
	return c.down(now)
}

// up tries base doubled; grew says whether a doubling has paid already.
func (c *climber) up(now time.Time, grew bool) (int, string) {
	c.grew = grew
	if c.base >= c.cfg.Max {
		if !grew {
			return c.down(now)
		}
		return c.hold(now, "at the cap")
	}
	c.state = climbUp
	return min(c.cfg.Max, 2*c.base), "try more workers"
}

// down tries base halved.
func (c *climber) down(now time.Time) (int, string) {
	if c.base <= 1 {
		return c.hold(now, "at one worker")
	}
	c.state = climbDown
	return max(1, c.base/2), "try fewer workers"
}

func (c *climber) hold(now time.Time, why string) (int, string) {
	c.state = climbHold
	c.nextProbe = now.Add(c.cfg.Reprobe)
	return c.base, why
}
