//! Maintenance windows (`spec.maintenance.window`): the weekly times at
//! which changes that only a new operator version brings may restart pods.
//! `Sun 03:00-05:00`, `Mon-Fri 22:00-23:30`, `Sat,Sun 01:00-03:00`,
//! `daily 02:00-02:30`; a window whose end is not after its start runs past
//! midnight (`Sat 23:00-01:00` ends on Sunday). Times are wall-clock times
//! in `timeZone` (IANA, default UTC), so a window keeps its local hour over
//! daylight saving changes. Pure.

use std::fmt;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

use crate::crd::MaintenanceSpec;

/// A parsed window: the days it starts on, its start and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit `n` set: starts on the weekday `n` days from Monday.
    days: u8,
    start: Time,
    minutes: i64,
    zone: TimeZone,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "maintenance.window {0:?} is not `DAYS HH:MM-HH:MM` (DAYS: daily, or Mon..Sun, lists and ranges such as Mon-Fri or Sat,Sun)"
    )]
    Syntax(String),
    #[error("maintenance.window {0:?} is empty: start and end are the same time")]
    Empty(String),
    #[error("maintenance.timeZone {0:?} is not a known IANA time zone (e.g. Europe/Berlin, UTC)")]
    TimeZone(String),
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn day(s: &str) -> Option<u8> {
    DAYS.iter()
        .position(|d| *d == s)
        .and_then(|i| u8::try_from(i).ok())
}

fn minutes_of(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) || h == 24 && m == 0).then_some(h * 60 + m)
}

fn days_of(s: &str) -> Option<u8> {
    if s == "daily" {
        return Some(0x7f);
    }
    let mut bits = 0u8;
    for part in s.split(',') {
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(part)?, day(part)?),
        };
        // A range wraps over the week's end: Fri-Mon is Fri, Sat, Sun, Mon.
        let mut d = from;
        loop {
            bits |= 1 << d;
            if d == to {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Some(bits)
}

impl Window {
    pub fn parse(window: &str, time_zone: Option<&str>) -> Result<Window, Error> {
        let syntax = || Error::Syntax(window.to_owned());
        let (days, times) = window.split_once(' ').ok_or_else(syntax)?;
        let (from, to) = times.split_once('-').ok_or_else(syntax)?;
        let days = days_of(days).ok_or_else(syntax)?;
        let (from, to) = (
            minutes_of(from)
                .filter(|m| *m < 24 * 60)
                .ok_or_else(syntax)?,
            minutes_of(to).ok_or_else(syntax)?,
        );
        let minutes = (to - from).rem_euclid(24 * 60);
        if minutes == 0 && to != from + 24 * 60 {
            return Err(Error::Empty(window.to_owned()));
        }
        let zone_name = time_zone.unwrap_or("UTC");
        let zone = TimeZone::get(zone_name).map_err(|_| Error::TimeZone(zone_name.to_owned()))?;
        let start = Time::new(
            i8::try_from(from / 60).map_err(|_| syntax())?,
            i8::try_from(from % 60).map_err(|_| syntax())?,
            0,
            0,
        )
        .map_err(|_| syntax())?;
        Ok(Window {
            days,
            start,
            minutes: if minutes == 0 { 24 * 60 } else { minutes },
            zone,
            text: format!("{window} ({zone_name})"),
        })
    }

    fn starts_on(&self, weekday: Weekday) -> bool {
        let n = weekday.to_monday_zero_offset();
        self.days & (1 << n) != 0
    }

    /// The window's occurrence starting on the local date of `day`.
    fn occurrence(&self, day: &Zoned) -> Option<(Timestamp, Timestamp)> {
        let start = day
            .date()
            .to_datetime(self.start)
            .to_zoned(self.zone.clone())
            .ok()?;
        let end = start.checked_add(self.minutes.minutes()).ok()?;
        Some((start.timestamp(), end.timestamp()))
    }

    /// The occurrences that may contain or follow `now`: from yesterday
    /// (a window running past midnight) to eight days on.
    fn occurrences(&self, now: Timestamp) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        let here = now.to_zoned(self.zone.clone());
        (-1i64..=8).filter_map(move |offset| {
            let day = here.checked_add(offset.days()).ok()?;
            if !self.starts_on(day.weekday()) {
                return None;
            }
            self.occurrence(&day)
        })
    }

    /// Whether `now` is inside the window.
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.occurrences(now).any(|(s, e)| s <= now && now < e)
    }

    /// When the window next opens after `now` (None: it never does, which a
    /// parsed window cannot be).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        self.occurrences(now).map(|(s, _)| s).find(|s| *s > now)
    }
}

/// Whether held rollouts may go now, from `spec.maintenance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// `applyImmediately: true`.
    Immediately,
    Open(Window),
    Closed(Window),
    /// No window set: held rollouts wait until one is.
    NotSet,
    /// A window the operator cannot read never opens.
    Invalid(Error),
}

impl State {
    pub fn of(spec: Option<&MaintenanceSpec>, now: Timestamp) -> State {
        let Some(spec) = spec else {
            return State::NotSet;
        };
        if spec.apply_immediately {
            return State::Immediately;
        }
        let Some(window) = spec.window.as_deref() else {
            return State::NotSet;
        };
        match Window::parse(window, spec.time_zone.as_deref()) {
            Ok(w) if w.is_open(now) => State::Open(w),
            Ok(w) => State::Closed(w),
            Err(e) => State::Invalid(e),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, State::Immediately | State::Open(_))
    }

    /// When a held rollout can go next, if the window is closed.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            State::Closed(w) => w.next_open(now),
            _ => None,
        }
    }

    /// What held rollouts wait for, for a condition's message.
    pub fn waiting_for(&self, now: Timestamp) -> String {
        match self {
            State::Closed(w) => match w.next_open(now) {
                Some(at) => format!("the maintenance window {w}, next at {at}"),
                None => format!("the maintenance window {w}"),
            },
            State::NotSet => {
                "a maintenance window: set spec.maintenance.window (e.g. `Sun 03:00-05:00`)".into()
            }
            State::Invalid(e) => format!("a valid maintenance window: {e}"),
            State::Immediately | State::Open(_) => "nothing".into(),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_weekly_window_in_utc() {
        // 2026-12-06 is a Sunday.
        let w = Window::parse("Sun 03:00-05:00", None).unwrap();
        assert!(!w.is_open(at("2026-12-06T02:59:59Z")));
        assert!(w.is_open(at("2026-12-06T03:00:00Z")));
        assert!(w.is_open(at("2026-12-06T04:59:59Z")));
        assert!(!w.is_open(at("2026-12-06T05:00:00Z")));
        assert_eq!(
            w.next_open(at("2026-12-02T10:00:00Z")),
            Some(at("2026-12-06T03:00:00Z"))
        );
        assert_eq!(
            w.next_open(at("2026-12-06T04:00:00Z")),
            Some(at("2026-12-13T03:00:00Z"))
        );
    }

    #[test]
    fn a_window_in_a_named_zone_keeps_its_local_hour_over_daylight_saving() {
        let w = Window::parse("Sun 03:00-05:00", Some("Europe/Berlin")).unwrap();
        // Winter: UTC+1.
        assert!(w.is_open(at("2026-12-06T02:30:00Z")));
        assert!(!w.is_open(at("2026-12-06T04:30:00Z")));
        // Summer: UTC+2.
        assert!(w.is_open(at("2026-07-05T01:30:00Z")));
        assert!(!w.is_open(at("2026-07-05T03:30:00Z")));
    }

    #[test]
    fn past_midnight_ranges_lists_and_daily() {
        let w = Window::parse("Sat 23:00-01:00", None).unwrap();
        assert!(w.is_open(at("2026-12-05T23:30:00Z")));
        assert!(w.is_open(at("2026-12-06T00:30:00Z")), "ends on Sunday");
        assert!(
            !w.is_open(at("2026-12-06T23:30:00Z")),
            "starts on Saturday only"
        );
        let weekdays = Window::parse("Mon-Fri 12:00-12:30", None).unwrap();
        assert!(weekdays.is_open(at("2026-12-04T12:10:00Z")), "Friday");
        assert!(!weekdays.is_open(at("2026-12-05T12:10:00Z")), "Saturday");
        let wrapping = Window::parse("Fri-Mon 12:00-12:30", None).unwrap();
        assert!(wrapping.is_open(at("2026-12-06T12:10:00Z")), "Sunday");
        assert!(!wrapping.is_open(at("2026-12-02T12:10:00Z")), "Wednesday");
        let list = Window::parse("Tue,Thu 08:00-09:00", None).unwrap();
        assert!(list.is_open(at("2026-12-03T08:00:00Z")));
        assert!(!list.is_open(at("2026-12-02T08:00:00Z")));
        let daily = Window::parse("daily 00:00-24:00", None).unwrap();
        assert!(daily.is_open(at("2026-12-02T17:00:00Z")));
    }

    #[test]
    fn the_state_follows_the_spec() {
        let now = at("2026-12-06T04:00:00Z");
        let spec = |window: Option<&str>, zone: Option<&str>, now_: bool| MaintenanceSpec {
            window: window.map(str::to_owned),
            time_zone: zone.map(str::to_owned),
            apply_immediately: now_,
        };
        assert_eq!(State::of(None, now), State::NotSet);
        assert!(State::of(Some(&spec(None, None, true)), now).is_open());
        assert!(State::of(Some(&spec(Some("Sun 03:00-05:00"), None, false)), now).is_open());
        let closed = State::of(Some(&spec(Some("Sun 05:00-06:00"), None, false)), now);
        assert!(!closed.is_open());
        assert_eq!(closed.next_open(now), Some(at("2026-12-06T05:00:00Z")));
        assert_eq!(
            closed.waiting_for(now),
            "the maintenance window Sun 05:00-06:00 (UTC), next at 2026-12-06T05:00:00Z"
        );
        let invalid = State::of(
            Some(&spec(Some("Sun 03:00-05:00"), Some("Nowhere"), false)),
            now,
        );
        assert!(
            !invalid.is_open(),
            "a window that cannot be read never opens"
        );
        assert!(invalid.waiting_for(now).contains("Nowhere"));
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        for bad in [
            "Sunday 03:00-05:00",
            "Sun 3:00-5:00",
            "Sun 03:00",
            "Sun 25:00-26:00",
            "03:00-05:00",
            "",
        ] {
            assert!(
                matches!(Window::parse(bad, None), Err(Error::Syntax(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Window::parse("Sun 03:00-03:00", None),
            Err(Error::Empty("Sun 03:00-03:00".into()))
        );
        assert_eq!(
            Window::parse("Sun 03:00-05:00", Some("Mars/Olympus")),
            Err(Error::TimeZone("Mars/Olympus".into()))
        );
    }
}
