package gc

import (
	"time"

	"go.uber.org/zap"
)

// applyClockSkew records the file server's clock skew, as the atime probe
// measured it, in st, and when the server is behind lowers st.MinAtime and
// st.OldestWriter by the lag, rounded up to whole milliseconds for the
// record and to whole seconds for the thresholds, so that both are
// on the server's clock like the atimes they are compared with (see doc
// "Clock skew"). A server ahead changes neither: its atimes only look
// younger, which keeps chunks longer.
func applyClockSkew(st *Status, skew time.Duration, log *zap.Logger) {
	ms := skew.Milliseconds()
	if skew < 0 && skew%time.Millisecond != 0 {
		ms-- // round a lag up, so the recorded skew never understates it
	}
	st.ClockSkewMs = &ms
	lag := lagSeconds(time.Duration(ms) * time.Millisecond)
	if lag == 0 {
		return
	}
	st.MinAtime -= lag
	st.OldestWriter -= lag
	log.Info("file server clock is behind: min-atime and oldest-writer lowered by its lag",
		zap.Duration("clock-skew", skew), zap.Int64("lowered-by-s", lag),
		zap.Time("min-atime", time.Unix(st.MinAtime, 0).UTC()),
		zap.Time("oldest-writer", time.Unix(st.OldestWriter, 0).UTC()))
}

// lagSeconds is how far behind a clock with the given skew is, in whole
// seconds rounded up; 0 when it is not behind.
func lagSeconds(skew time.Duration) int64 {
	if skew >= 0 {
		return 0
	}
	return int64((-skew + time.Second - 1) / time.Second)
}
