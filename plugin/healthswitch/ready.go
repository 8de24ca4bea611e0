package healthswitch

// Ready implements ready.Readiness: not ready until every cluster that has a
// signal source has had a first signal, or ready_timeout has passed.
func (h *HealthSwitch) Ready() bool { return h.engine.ready() }
