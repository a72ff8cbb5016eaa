package itsp

// wheel is a timer wheel of the shard's events: slots of wheelTick
// nanoseconds, one slice per slot, reused. An event is fired once its
// slot has passed (at most one tick late); one beyond the wheel's span
// is parked in the last slot and re-added when that slot passes.
// Cancelled events stay until their slot (the generation check drops
// them), as with the heap this replaces.
type wheel struct {
	slots [][]tev
	cur   int64 // the next slot to fire, absolute
	n     int   // events held
}

const (
	wheelTick  = int64(2e6) // 2 ms
	wheelSlots = 1 << 15    // 65 s span
)

func newWheel(now int64) *wheel {
	return &wheel{slots: make([][]tev, wheelSlots), cur: now / wheelTick}
}

func (w *wheel) add(e tev) {
	s := e.at / wheelTick
	s = max(s, w.cur)
	s = min(s, w.cur+wheelSlots-1)
	i := s & (wheelSlots - 1)
	w.slots[i] = append(w.slots[i], e)
	w.n++
}

// due calls f for every event whose slot ended by now; f may add events.
func (w *wheel) due(now int64, f func(tev)) {
	for (w.cur+1)*wheelTick <= now {
		i := w.cur & (wheelSlots - 1)
		w.cur++
		// Events added to this slot while it runs land in the next one
		// (cur moved on), so the slice is stable here.
		sl := w.slots[i]
		w.slots[i] = nil
		for k := range sl {
			w.n--
			if sl[k].at > now {
				w.add(sl[k]) // parked beyond the span
				continue
			}
			f(sl[k])
		}
		clear(sl)
		if w.slots[i] == nil {
			w.slots[i] = sl[:0]
		}
	}
}
