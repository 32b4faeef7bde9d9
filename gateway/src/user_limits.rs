//! Limits per user on this gateway: how many sessions a user holds here
//! ([`Seats`]), and how often a user's `typing` in one room goes out
//! ([`TypingThrottle`]). Both are per gateway: a user's sessions on another
//! gateway have budgets of their own there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Sessions per user. A seat is taken before the WebSocket upgrade and held
/// by the session's task, so two upgrades at once cannot both take the last one.
pub struct Seats {
    max: usize,
    taken: Mutex<HashMap<Arc<str>, usize>>,
}

/// One session's place among its user's; given back when dropped.
pub struct Seat {
    seats: Arc<Seats>,
    user: Arc<str>,
}

impl Seats {
    pub fn new(max: usize) -> Arc<Seats> {
        Arc::new(Seats { max: max.max(1), taken: Mutex::default() })
    }

    /// Most sessions one user may hold on this gateway.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A seat for one more session of `user`, unless they hold all of theirs.
    pub fn take(self: &Arc<Self>, user: &str) -> Option<Seat> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let user: Arc<str> = match taken.get_key_value(user) {
            Some((_, &n)) if n >= self.max => return None,
            Some((u, _)) => u.clone(),
            None => Arc::from(user),
        };
        *taken.entry(user.clone()).or_default() += 1;
        Some(Seat { seats: self.clone(), user })
    }

    #[cfg(test)]
    fn held(&self, user: &str) -> usize {
        self.taken.lock().unwrap().get(user).copied().unwrap_or(0)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut taken = self.seats.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = taken.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                taken.remove(&self.user);
            }
        }
    }
}

/// At most one `typing` per (user, room) per interval goes on to the room;
/// the rest are answered without being sent. What it keeps is one entry per
/// (user, room) typed in within the last interval or so: older entries are
/// swept out whenever the map has doubled since the last sweep.
pub struct TypingThrottle {
    interval_ms: u64,
    state: Mutex<Typing>,
}

#[derive(Default)]
struct Typing {
    /// (user, room) -> when its last `typing` went out, in gateway milliseconds.
    last: HashMap<(Box<str>, Box<str>), u64>,
    /// How many entries the last sweep left.
    swept_to: usize,
}

impl TypingThrottle {
    pub fn new(interval_ms: u64) -> TypingThrottle {
        TypingThrottle { interval_ms, state: Mutex::default() }
    }

    /// Whether a `typing` of `user` in `room` at `now_ms` goes out (and, if
    /// so, counts as the pair's last).
    pub fn allow(&self, user: &str, room: &str, now_ms: u64) -> bool {
        if self.interval_ms == 0 {
            return true;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (Box::from(user), Box::from(room));
        if let Some(&last) = state.last.get(&key)
            && now_ms.saturating_sub(last) < self.interval_ms
        {
            return false;
        }
        state.last.insert(key, now_ms);
        if state.last.len() >= (2 * state.swept_to).max(1024) {
            let interval = self.interval_ms;
            state.last.retain(|_, &mut last| now_ms.saturating_sub(last) < interval);
            state.swept_to = state.last.len();
        }
        true
    }

    /// `user` sent a message to `room`, which ends their typing indicator
    /// there: their next `typing` goes out at once.
    pub fn forget(&self, user: &str, room: &str) {
        if self.interval_ms == 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last.remove(&(Box::from(user), Box::from(room)));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap().last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_max_seats_and_a_dropped_one_is_free_again() {
        let seats = Seats::new(2);
        let a = seats.take("alice").unwrap();
        let _b = seats.take("alice").unwrap();
        assert!(seats.take("alice").is_none());
        assert!(seats.take("bob").is_some(), "another user has seats of their own");
        drop(a);
        let _c = seats.take("alice").expect("a closed session frees its seat");
        assert_eq!(seats.held("alice"), 2);
        drop(_c);
        drop(_b);
        assert_eq!(seats.held("alice"), 0);
        assert!(seats.taken.lock().unwrap().is_empty(), "nothing kept for users without sessions");
    }

    #[test]
    fn typing_goes_out_once_per_user_room_and_interval() {
        let t = TypingThrottle::new(2000);
        assert!(t.allow("alice", "r", 10_000));
        assert!(!t.allow("alice", "r", 10_001));
        assert!(!t.allow("alice", "r", 11_999));
        assert!(t.allow("alice", "s", 11_999), "another room");
        assert!(t.allow("bob", "r", 11_999), "another user");
        assert!(t.allow("alice", "r", 12_000));
    }

    #[test]
    fn a_message_ends_the_typing_and_the_next_one_goes_out_at_once() {
        let t = TypingThrottle::new(2000);
        assert!(t.allow("alice", "r", 10_000));
        t.forget("alice", "r");
        assert!(t.allow("alice", "r", 10_500), "typing again right after a message is news");
        assert!(!t.allow("alice", "r", 10_600));
    }

    #[test]
    fn old_typing_entries_are_swept() {
        let t = TypingThrottle::new(2000);
        for i in 0..5000u64 {
            assert!(t.allow("alice", &format!("room{i}"), i * 10));
        }
        // Entries older than the interval (200 rooms' worth at 10 ms apart)
        // go at each sweep; the map never holds many more than that.
        assert!(t.len() < 1024 + 200, "{} entries kept", t.len());
    }
}
