use super::*;

const S: Stamp = 1000;

fn started(min: Option<u32>, max: Option<u32>) -> TargetCounts {
    TargetCounts {
        started: Bounds { min, max },
        ..TargetCounts::default()
    }
}

fn current(started: usize) -> Current {
    Current {
        created: started,
        started,
        ..Current::default()
    }
}

fn window(up: u64, down: u64) -> Controls {
    Controls {
        scale_up_stabilization: Duration::from_secs(up),
        scale_down_stabilization: Duration::from_secs(down),
        ..Controls::default()
    }
}

/// Decides at `t` seconds with `raw` targets and `n` started machines.
fn at(c: &Controls, m: &mut Memory, t: i64, raw: TargetCounts, n: usize) -> Decision {
    decide::<()>(c, m, t * S, Ok(raw), &current(n)).unwrap()
}

#[test]
fn defaults_change_nothing_and_remember_nothing() {
    let c = Controls::default();
    let mut m = Memory::default();
    for t in 0..100 {
        let raw = started(Some(t as u32 % 7), Some(t as u32 % 7));
        let d = at(&c, &mut m, t, raw, 3);
        assert_eq!(d.effective, raw);
        assert!(d.held.is_empty());
    }
    assert_eq!(m.recommendations.len(), 1, "a zero window keeps only now");
}

#[test]
fn scale_down_waits_until_every_recommendation_in_the_window_agrees() {
    let c = window(0, 300);
    let mut m = Memory::default();
    assert_eq!(
        at(&c, &mut m, 0, started(Some(5), Some(5)), 5)
            .effective
            .started
            .max,
        Some(5)
    );
    // The queue drains: the expression says 2, but 5 was recommended within 300 s.
    let d = at(&c, &mut m, 60, started(Some(2), Some(2)), 5);
    assert_eq!(
        d.effective.started,
        Bounds {
            min: Some(2),
            max: Some(5)
        }
    );
    assert_eq!(d.held, [Held::ScaleDownStabilization]);
    // Once the 5 leaves the window the scale-down goes ahead.
    let d = at(&c, &mut m, 301, started(Some(2), Some(2)), 5);
    assert_eq!(d.effective.started.max, Some(2));
    assert!(d.held.is_empty());
}

#[test]
fn scale_up_uses_the_lowest_min_in_its_window() {
    let c = window(120, 0);
    let mut m = Memory::default();
    at(&c, &mut m, 0, started(Some(1), Some(1)), 1);
    let d = at(&c, &mut m, 30, started(Some(4), Some(4)), 1);
    assert_eq!(
        d.effective.started,
        Bounds {
            min: Some(1),
            max: Some(4)
        }
    );
    assert_eq!(d.held, [Held::ScaleUpStabilization]);
    assert_eq!(
        at(&c, &mut m, 121, started(Some(4), Some(4)), 1)
            .effective
            .started
            .min,
        Some(4)
    );
}

#[test]
fn no_bound_in_the_window_is_the_widest_bound() {
    let c = window(60, 60);
    let mut m = Memory::default();
    at(&c, &mut m, 0, started(None, None), 3);
    let d = at(&c, &mut m, 10, started(Some(5), Some(1)), 3);
    assert_eq!(
        d.effective.started,
        Bounds {
            min: None,
            max: None
        }
    );
    assert_eq!(
        d.held,
        [Held::ScaleUpStabilization, Held::ScaleDownStabilization]
    );
}

#[test]
fn cooldown_holds_only_the_opposite_direction() {
    let c = Controls {
        cooldown: Duration::from_secs(60),
        ..Controls::default()
    };
    let mut m = Memory::default();
    m.acted(Direction::Up, 0);
    // Going down within the cooldown is held…
    let d = at(&c, &mut m, 30, started(Some(1), Some(1)), 4);
    assert_eq!(
        d.effective.started,
        Bounds {
            min: Some(1),
            max: None
        }
    );
    assert_eq!(d.held, [Held::Cooldown]);
    // …going further up is not…
    let d = at(&c, &mut m, 31, started(Some(6), Some(6)), 4);
    assert_eq!(d.effective.started.min, Some(6));
    assert!(d.held.is_empty());
    // …and after it, down is allowed again.
    let d = at(&c, &mut m, 61, started(Some(1), Some(1)), 4);
    assert_eq!(d.effective.started.max, Some(1));
    m.acted(Direction::Down, 61 * S);
    let d = at(&c, &mut m, 70, started(Some(5), Some(5)), 1);
    assert_eq!(d.effective.started.min, None);
    assert_eq!(d.held, [Held::Cooldown]);
}

#[test]
fn fallback_applies_from_the_nth_failure_until_a_success() {
    let c = Controls {
        fallback: Some(Fallback {
            after: 2,
            created: None,
            started: Some(3),
        }),
        ..Controls::default()
    };
    let mut m = Memory::default();
    let fail = |m: &mut Memory, t: i64| decide(&c, m, t * S, Err("down"), &current(1));
    assert_eq!(
        fail(&mut m, 0),
        Err("down"),
        "first failure: a failed cycle"
    );
    let d = fail(&mut m, 15).unwrap();
    assert_eq!(d.fallback_change, Some(FallbackChange::Entered));
    assert!(d.in_fallback);
    assert_eq!(d.effective, started(Some(3), Some(3)));
    assert_eq!(
        d.effective.created,
        Bounds::default(),
        "no created fallback: no target"
    );
    assert_eq!(fail(&mut m, 30).unwrap().fallback_change, None);
    let d = at(&c, &mut m, 45, started(Some(1), Some(1)), 3);
    assert_eq!(d.fallback_change, Some(FallbackChange::Left));
    assert!(!d.in_fallback);
    assert_eq!(d.effective, started(Some(1), Some(1)));
    assert_eq!(fail(&mut m, 60), Err("down"), "the count starts over");
}

#[test]
fn cooldown_holds_a_fallback_that_goes_the_other_way() {
    let c = Controls {
        cooldown: Duration::from_secs(300),
        fallback: Some(Fallback {
            after: 1,
            created: None,
            started: Some(1),
        }),
        ..Controls::default()
    };
    let mut m = Memory::default();
    m.acted(Direction::Up, 0);
    let d = decide(&c, &mut m, 10 * S, Err(()), &current(4)).unwrap();
    assert!(d.in_fallback);
    assert_eq!(d.raw, started(Some(1), Some(1)));
    assert_eq!(d.effective.started.max, None);
    assert_eq!(d.held, [Held::Cooldown]);
}

#[test]
fn a_window_prefilled_from_history_holds_a_short_dip() {
    let c = window(0, 600);
    let mut m = Memory::default();
    for t in (0..600).step_by(15) {
        m.record(t * S, started(Some(4), Some(4)));
    }
    let d = at(&c, &mut m, 600, started(Some(1), Some(1)), 4);
    assert_eq!(d.effective.started.max, Some(4));
    assert_eq!(d.held, [Held::ScaleDownStabilization]);
}

#[test]
fn memory_is_bounded() {
    let c = window(3600, 3600);
    let mut m = Memory::default();
    for t in 0..(MAX_REMEMBERED as i64 + 50) {
        decide::<()>(&c, &mut m, t, Ok(started(Some(1), Some(1))), &current(1)).unwrap();
    }
    assert_eq!(m.recommendations.len(), MAX_REMEMBERED);
}
