//! HAProxy's rise/fall machine: how consecutive check results move a server between UP and
//! DOWN, and the words `show stat` uses for its progress (`UP 1/3`).

/// HAProxy's rise/fall machine for one server: a health counter from 0 to `rise + fall - 1`.
/// UP servers sit at the top and fall one step per failure, going DOWN (counter 0) when a
/// failure finds them at `rise`; DOWN servers climb one step per success and jump to the top,
/// UP, on reaching `rise`. A server starts UP at `rise`, so its very first failure marks it
/// DOWN, as HAProxy 2.6 does (`UP 1/3` before the first check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    up: bool,
    health: u32,
    rise: u32,
    fall: u32,
}

/// A state change decided by [`RiseFall::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Became UP after `rise` successes.
    Up,
    /// Became DOWN.
    Down,
}

impl RiseFall {
    /// A server at start: UP, one failure away from DOWN.
    pub fn new(rise: u32, fall: u32) -> RiseFall {
        let (rise, fall) = (rise.max(1), fall.max(1));
        RiseFall {
            up: true,
            health: rise,
            rise,
            fall,
        }
    }

    /// A server known to be DOWN (a check task restarted by a reload).
    pub fn down(rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            up: false,
            health: 0,
            ..RiseFall::new(rise, fall)
        }
    }

    fn top(&self) -> u32 {
        self.rise + self.fall - 1
    }

    /// Whether the server is UP.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// `rise`.
    pub fn rise(&self) -> u32 {
        self.rise
    }

    /// `fall`.
    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// The health counter itself, from 0 to `rise + fall - 1` (HAProxy's `check_health`).
    pub fn counter(&self) -> u32 {
        self.health
    }

    /// Whether a change of state is under way (the `fastinter` case).
    pub fn transitioning(&self) -> bool {
        self.health != 0 && self.health != self.top()
    }

    /// Records one result; returns the transition it causes, if any.
    pub fn record(&mut self, passed: bool) -> Option<Transition> {
        match (self.up, passed) {
            (true, true) => {
                self.health = self.top();
                None
            }
            (true, false) if self.health > self.rise => {
                self.health -= 1;
                None
            }
            (true, false) => {
                self.up = false;
                self.health = 0;
                Some(Transition::Down)
            }
            (false, true) => {
                self.health += 1;
                if self.health < self.rise {
                    return None;
                }
                self.up = true;
                self.health = self.top();
                Some(Transition::Up)
            }
            (false, false) => {
                self.health = 0;
                None
            }
        }
    }

    /// The state as HAProxy prints it in `show stat` and check logs (`UP 2/3`, `DOWN 1/2`).
    pub fn progress(&self) -> String {
        if self.up {
            format!("UP {}/{}", self.health + 1 - self.rise, self.fall)
        } else {
            format!("DOWN {}/{}", self.health, self.rise)
        }
    }
}
