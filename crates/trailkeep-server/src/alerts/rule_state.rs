//! The state of one rule and how it moves: a pure state machine over match times and a clock
//! that the caller passes in (so tests drive it with made-up instants).
//!
//! Times are unix nanoseconds. A match's time is the record's `receivedAt` (ledger metadata), so
//! replaying the ledger after a restart rebuilds exactly the same state. Matches are counted in
//! [`BUCKETS_PER_WINDOW`] buckets per window (aligned to multiples of the bucket width), so a
//! rule's state stays small however many events match; a bucket leaves the window once all of it
//! is older than the window, so the window is `W` to `W + W/100` long.
//!
//! * **Presence** with a window `W` and threshold `N`: the rule *fires* when a match makes the
//!   matches within `(t − W, t]` reach `N`; it stays *firing* (no new notification) while that
//!   holds, is re-notified every `renotify` if one is set, and resolves once fewer than `N` remain
//!   in the window. Without a window every match fires (several matches of one batch make one
//!   notification).
//! * **Absence** with a window `W` and threshold `N`: at a tick at `now`, the rule fires when fewer
//!   than `N` matches fall in `(now − W, now]`, the view was *active* (a match within the past 24 h),
//!   and the rule has been watching for at least `W`; it resolves when matches come back.
//! * **Mute** is applied by the caller: a fire while muted is recorded, not sent, and counts as
//!   notified (so no burst when the mute ends; re-notify resumes after it).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::model::{ACTIVE_WITHIN, ConditionType};

/// The newest matching positions kept per rule (for the notification's events).
pub const NEWEST_KEPT: usize = 10;
/// Match counts are kept in this many buckets per window.
pub const BUCKETS_PER_WINDOW: i64 = 100;

/// A rule's condition in the evaluator's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub kind: ConditionType,
    pub threshold: u64,
    /// Window in nanoseconds; `None`: presence on every match.
    pub window: Option<i64>,
    /// Re-notify interval in nanoseconds.
    pub renotify: Option<i64>,
}

/// Why a notification is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FireKind {
    /// The condition became true.
    Fired,
    /// Still true after the re-notify interval.
    Renotify,
}

/// A notification the state machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub kind: FireKind,
    /// When (a match's receive time, or the tick's clock).
    pub at: i64,
    /// Matches counted in the window.
    pub count: u64,
    /// The match that triggered it (presence), for a stable notification id.
    pub trigger: Option<u64>,
}

/// The persisted state of one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleState {
    /// Matches per time bucket within the window: (bucket start, count), oldest first.
    pub buckets: VecDeque<(i64, u64)>,
    /// Positions of the newest matches in the view's account, oldest first.
    pub newest: VecDeque<u64>,
    pub last_match: Option<i64>,
    pub firing: bool,
    pub last_notified: Option<i64>,
    /// When the rule started watching (its creation); absence waits one window from here.
    pub since: i64,
}

impl RuleState {
    pub fn new(since: i64) -> RuleState {
        RuleState {
            since,
            ..RuleState::default()
        }
    }

    fn width(window: i64) -> i64 {
        (window / BUCKETS_PER_WINDOW).max(1_000_000)
    }

    fn prune(&mut self, cond: &Cond, now: i64) {
        if let Some(w) = cond.window {
            let width = Self::width(w);
            while self
                .buckets
                .front()
                .is_some_and(|&(start, _)| start + width <= now - w)
            {
                self.buckets.pop_front();
            }
        }
    }

    /// Matches in the window.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    fn renotify_due(&self, cond: &Cond, now: i64) -> bool {
        match (cond.renotify, self.last_notified) {
            (Some(every), Some(last)) => now - last >= every,
            _ => false,
        }
    }

    /// A matching record at `t` (its position `index`).
    pub fn on_match(&mut self, cond: &Cond, t: i64, index: u64) -> Option<Fire> {
        self.last_match = Some(self.last_match.map_or(t, |m| m.max(t)));
        self.newest.push_back(index);
        while self.newest.len() > NEWEST_KEPT {
            self.newest.pop_front();
        }
        if let Some(w) = cond.window {
            let width = Self::width(w);
            let start = t.div_euclid(width) * width;
            match self.buckets.back_mut() {
                // A record received a little earlier than the newest one joins the newest bucket.
                Some((last, n)) if *last >= start => *n += 1,
                _ => self.buckets.push_back((start, 1)),
            }
        }
        self.prune(cond, t);
        let count = self.count();
        match (cond.kind, cond.window) {
            (ConditionType::Presence, None) => {
                self.last_notified = Some(t);
                Some(Fire {
                    kind: FireKind::Fired,
                    at: t,
                    count: 1,
                    trigger: Some(index),
                })
            }
            (ConditionType::Presence, Some(_)) => {
                if count < cond.threshold {
                    return None;
                }
                if !self.firing {
                    self.firing = true;
                    self.last_notified = Some(t);
                    return Some(Fire {
                        kind: FireKind::Fired,
                        at: t,
                        count,
                        trigger: Some(index),
                    });
                }
                if self.renotify_due(cond, t) {
                    self.last_notified = Some(t);
                    return Some(Fire {
                        kind: FireKind::Renotify,
                        at: t,
                        count,
                        trigger: Some(index),
                    });
                }
                None
            }
            (ConditionType::Absence, _) => {
                if self.firing && count >= cond.threshold {
                    self.firing = false;
                }
                None
            }
        }
    }

    /// The clock moved to `now`: windows slide, absence is checked, re-notify comes due.
    pub fn tick(&mut self, cond: &Cond, now: i64) -> Option<Fire> {
        let window = cond.window?;
        self.prune(cond, now);
        let count = self.count();
        let holds = match cond.kind {
            ConditionType::Presence => count >= cond.threshold,
            ConditionType::Absence => {
                let active = self
                    .last_match
                    .is_some_and(|m| m > now - ACTIVE_WITHIN.whole_nanoseconds() as i64);
                active && count < cond.threshold && now - self.since >= window
            }
        };
        if !holds {
            self.firing = false;
            return None;
        }
        if !self.firing {
            // Presence becomes true only on a match (handled there); absence here.
            if cond.kind == ConditionType::Absence {
                self.firing = true;
                self.last_notified = Some(now);
                return Some(Fire {
                    kind: FireKind::Fired,
                    at: now,
                    count,
                    trigger: None,
                });
            }
            return None;
        }
        if self.renotify_due(cond, now) {
            self.last_notified = Some(now);
            return Some(Fire {
                kind: FireKind::Renotify,
                at: now,
                count,
                trigger: None,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_800_000_000 * S;

    fn presence(threshold: u64, window_s: Option<i64>, renotify_s: Option<i64>) -> Cond {
        Cond {
            kind: ConditionType::Presence,
            threshold,
            window: window_s.map(|w| w * S),
            renotify: renotify_s.map(|r| r * S),
        }
    }

    fn absence(threshold: u64, window_s: i64, renotify_s: Option<i64>) -> Cond {
        Cond {
            kind: ConditionType::Absence,
            threshold,
            window: Some(window_s * S),
            renotify: renotify_s.map(|r| r * S),
        }
    }

    #[test]
    fn presence_fires_once_when_the_threshold_is_reached_within_the_window() {
        let c = presence(3, Some(60), None);
        let mut s = RuleState::new(T0);
        assert_eq!(s.on_match(&c, T0, 0), None);
        assert_eq!(s.on_match(&c, T0 + 10 * S, 1), None);
        // The first match slid out of the window: still two.
        assert_eq!(s.on_match(&c, T0 + 61 * S, 2), None);
        let fire = s.on_match(&c, T0 + 62 * S, 3).expect("three within 60 s");
        assert_eq!(
            (fire.kind, fire.count, fire.trigger),
            (FireKind::Fired, 3, Some(3))
        );
        // While it holds, no new notification (no re-notify asked).
        assert_eq!(s.on_match(&c, T0 + 63 * S, 4), None);
        assert_eq!(s.tick(&c, T0 + 100 * S), None);
        assert!(s.firing);
        // It resolves when the window empties below the threshold, and can fire again.
        assert_eq!(s.tick(&c, T0 + 200 * S), None);
        assert!(!s.firing);
        s.on_match(&c, T0 + 300 * S, 5);
        s.on_match(&c, T0 + 301 * S, 6);
        assert!(s.on_match(&c, T0 + 302 * S, 7).is_some());
    }

    #[test]
    fn presence_renotifies_while_the_condition_persists() {
        let c = presence(1, Some(300), Some(60));
        let mut s = RuleState::new(T0);
        assert_eq!(s.on_match(&c, T0, 0).unwrap().kind, FireKind::Fired);
        assert_eq!(s.on_match(&c, T0 + 30 * S, 1), None, "within the interval");
        assert_eq!(s.tick(&c, T0 + 59 * S), None);
        let again = s.tick(&c, T0 + 60 * S).expect("re-notify after 60 s");
        assert_eq!(again.kind, FireKind::Renotify);
        assert_eq!(s.tick(&c, T0 + 90 * S), None);
        assert_eq!(
            s.on_match(&c, T0 + 125 * S, 2).unwrap().kind,
            FireKind::Renotify
        );
    }

    #[test]
    fn presence_without_a_window_fires_on_every_match() {
        let c = presence(1, None, None);
        let mut s = RuleState::new(T0);
        for i in 0..3 {
            let f = s.on_match(&c, T0 + i * S, i as u64).unwrap();
            assert_eq!((f.count, f.trigger), (1, Some(i as u64)));
        }
        assert_eq!(s.tick(&c, T0 + 10 * S), None);
        assert_eq!(s.newest, [0, 1, 2]);
        assert!(s.buckets.is_empty(), "nothing to count without a window");
    }

    #[test]
    fn absence_fires_only_while_the_view_was_active_and_after_one_window() {
        let c = absence(1, 300, None);
        // Never active: never fires.
        let mut idle = RuleState::new(T0);
        assert_eq!(idle.tick(&c, T0 + 3_600 * S), None);

        let mut s = RuleState::new(T0);
        s.on_match(&c, T0 + 10 * S, 0);
        // A match within the window: the condition does not hold.
        assert_eq!(s.tick(&c, T0 + 200 * S), None);
        // The window (and the match's 3 s bucket) passed without a match: fire once.
        assert_eq!(
            s.tick(&c, T0 + 311 * S),
            None,
            "the match's bucket is still in the window"
        );
        let fire = s.tick(&c, T0 + 313 * S).expect("none within 5 m");
        assert_eq!(
            (fire.kind, fire.count, fire.trigger),
            (FireKind::Fired, 0, None)
        );
        assert_eq!(
            s.tick(&c, T0 + 400 * S),
            None,
            "not re-sent while it persists"
        );
        // Events come back: resolved; silence again fires again.
        s.on_match(&c, T0 + 500 * S, 1);
        assert_eq!(s.tick(&c, T0 + 501 * S), None);
        assert!(!s.firing);
        assert!(s.tick(&c, T0 + 804 * S).is_some());
        // After 24 h without any match the view is inactive: nothing more.
        let mut s2 = s.clone();
        s2.firing = false;
        assert_eq!(s2.tick(&c, T0 + 500 * S + 86_400 * S + 1), None);
    }

    #[test]
    fn absence_counts_against_the_threshold_and_renotifies() {
        let c = absence(3, 60, Some(120));
        let mut s = RuleState::new(T0);
        s.on_match(&c, T0 + S, 0);
        s.on_match(&c, T0 + 2 * S, 1);
        // Two in the window is fewer than three, once a whole window has been watched.
        assert_eq!(s.tick(&c, T0 + 59 * S), None);
        assert!(s.tick(&c, T0 + 60 * S).is_some());
        assert_eq!(s.tick(&c, T0 + 179 * S), None);
        assert_eq!(s.tick(&c, T0 + 180 * S).unwrap().kind, FireKind::Renotify);
        // Three matches within the window: resolved.
        for i in 0..3 {
            s.on_match(&c, T0 + (200 + i) * S, 2 + i as u64);
        }
        assert!(!s.firing);
        assert_eq!(s.tick(&c, T0 + 210 * S), None);
    }

    #[test]
    fn counts_stay_small_and_exact_for_many_matches() {
        let c = presence(5_000, Some(300), None);
        let mut s = RuleState::new(T0);
        let mut fired = None;
        // 10,000 matches over 100 s: the threshold is reached at the 5,000th.
        for i in 0..10_000i64 {
            if let Some(f) = s.on_match(&c, T0 + i * S / 100, i as u64) {
                fired.get_or_insert((i, f.count));
            }
        }
        assert_eq!(fired, Some((4_999, 5_000)));
        assert_eq!(s.count(), 10_000);
        assert!(
            s.buckets.len() <= BUCKETS_PER_WINDOW as usize + 1,
            "{}",
            s.buckets.len()
        );
        assert!(serde_json::to_string(&s).unwrap().len() < 4_000);
        // Five minutes after the last match, everything has left the window.
        s.tick(&c, T0 + 100 * S + 303 * S);
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let c = presence(2, Some(30), None);
        let mut s = RuleState::new(T0);
        s.on_match(&c, T0, 7);
        let back: RuleState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
