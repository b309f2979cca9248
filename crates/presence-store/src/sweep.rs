//! How a sweep drains one step: bounded calls until a batch comes back short, or until
//! [`MAX_CALLS_PER_STEP`] calls were made (the next sweep carries on). Draining each step
//! before the next keeps what a sweep emits independent of the batch size. Both stores follow
//! this one rule; the memory store calls [`drain`], the Redis store drives a [`Drain`] across
//! its awaits.

/// Most bounded calls one sweep makes of one step; the next sweep carries on.
pub(crate) const MAX_CALLS_PER_STEP: usize = 100;

/// What one bounded call of a sweep step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Records the call changed.
    pub(crate) changed: usize,
    /// The call's batch was full: more may be waiting.
    pub(crate) full: bool,
}

/// One step being drained: say whether another call is due, then record what it did.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    calls: usize,
    changed: usize,
    short: bool,
}

impl Drain {
    /// Whether another call is due: the last batch was full and the cap is not reached.
    pub(crate) fn more(&self) -> bool {
        !self.short && self.calls < MAX_CALLS_PER_STEP
    }

    /// Records one call.
    pub(crate) fn record(&mut self, step: Step) {
        self.calls += 1;
        self.changed += step.changed;
        self.short = !step.full;
    }

    /// Records changed by every call so far.
    pub(crate) fn changed(&self) -> usize {
        self.changed
    }
}

/// Runs `step` until its batch comes back short or the cap is reached; returns what changed.
pub(crate) fn drain(mut step: impl FnMut() -> Step) -> usize {
    let mut d = Drain::default();
    while d.more() {
        d.record(step());
    }
    d.changed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_batch_ends_the_step() {
        let mut calls = 0;
        let changed = drain(|| {
            calls += 1;
            Step {
                changed: 10,
                full: calls < 3,
            }
        });
        assert_eq!((calls, changed), (3, 30));
    }

    #[test]
    fn an_empty_step_makes_one_call() {
        let mut calls = 0;
        let changed = drain(|| {
            calls += 1;
            Step::default()
        });
        assert_eq!((calls, changed), (1, 0));
    }

    #[test]
    fn full_batches_stop_at_the_cap() {
        let mut calls = 0;
        let changed = drain(|| {
            calls += 1;
            Step {
                changed: 1,
                full: true,
            }
        });
        assert_eq!((calls, changed), (MAX_CALLS_PER_STEP, MAX_CALLS_PER_STEP));
    }
}
