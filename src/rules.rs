//! The rule engine: a pure function of (ticket, now) to a decision.
//!
//! No IO, no clock reads, no failure: the cycle passes the time in, the
//! config module builds the rules. The safety floor (protected ids, the
//! minimum age, an unknown deletion time) always wins over a purge rule.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;

use crate::ids::TicketId;
use crate::ticket::Ticket;

/// What a rule does with the tickets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Purge,
    Keep,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purge => "purge",
            Self::Keep => "keep",
        }
    }
}

/// The form in which names and states are compared: Unicode compatibility
/// caseless (NFKD, full case folding, NFKD), without invisible format
/// characters (zero-width spaces and joiners, direction marks, soft
/// hyphens, byte-order marks), with every run of white space (no-break
/// spaces and tabs included) made one space and trimmed. So `"Closed "`,
/// `"CLOSED"`, `"Jose\u{301}"` / `"José"`, `"STRASSE"` / `"Straße"`, `"Ada\u{a0}Lovelace"`,
/// `"Ada  Lovelace"` and full-width letters each compare equal, and a keep
/// rule is never dodged by spelling.
pub fn normalize(text: &str) -> String {
    use caseless::Caseless;
    use unicode_normalization::UnicodeNormalization;
    let folded: String = text
        .nfkd()
        .default_case_fold()
        .nfkd()
        .filter(|c| !is_invisible(*c))
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Characters that change nothing a person sees in a name.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}')
}

/// The statuses every Zendesk account has (custom ones come on top).
pub const STANDARD_STATES: [&str; 6] = ["new", "open", "pending", "hold", "solved", "closed"];

/// One `[[rules]]` entry, validated. Every condition present must hold.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    pub name: String,
    pub action: RuleAction,
    /// Deleted at least this long ago.
    pub older_than: Option<Duration>,
    /// Deleted less than this long ago.
    pub younger_than: Option<Duration>,
    /// Status before deletion, as `normalize` writes it.
    pub previous_state: Option<BTreeSet<String>>,
    pub actor_ids: Option<BTreeSet<u64>>,
    /// Names as `normalize` writes them: compared trimmed and caseless.
    pub actor_names: Option<BTreeSet<String>>,
    pub subject_matches: Option<Regex>,
    /// Set on a purge rule that has no condition on purpose.
    pub match_all: bool,
}

impl RetentionRule {
    /// A rule with no condition, for building rules in code and tests.
    pub fn new(name: impl Into<String>, action: RuleAction) -> Self {
        Self {
            name: name.into(),
            action,
            older_than: None,
            younger_than: None,
            previous_state: None,
            actor_ids: None,
            actor_names: None,
            subject_matches: None,
            match_all: false,
        }
    }

    /// Whether the rule has a condition that can leave a ticket out, given
    /// the safety floor: an `older_than` not above `min_age` adds nothing,
    /// and a `subject_matches` that matches the empty string selects every
    /// ticket with a subject.
    pub fn has_effective_condition(&self, min_age: Duration) -> bool {
        // Zendesk scrubs deleted tickets after about 30 days: "deleted less
        // than 30 days ago or more" leaves nothing out
        const SCRUB: Duration = Duration::from_secs(30 * 86_400);
        // a pattern that matches all of these matches every real subject
        const SUBJECTS: [&str; 8] = [
            "a",
            "Z",
            "0",
            " ",
            "-",
            "\u{e9}",
            "Refund request #4711",
            "Legal hold: contract review",
        ];
        let all_states = self.previous_state.as_ref().is_some_and(|states| {
            STANDARD_STATES
                .iter()
                .all(|s| states.contains(&normalize(s)))
        });
        let every_subject = |re: &Regex| re.is_match("") || SUBJECTS.iter().all(|s| re.is_match(s));
        self.older_than.is_some_and(|o| o > min_age)
            || self.younger_than.is_some_and(|y| y < SCRUB)
            || (self.previous_state.is_some() && !all_states)
            || self.actor_ids.is_some()
            || self.actor_names.is_some()
            || self
                .subject_matches
                .as_ref()
                .is_some_and(|re| !every_subject(re))
    }

    pub fn has_condition(&self) -> bool {
        self.older_than.is_some()
            || self.younger_than.is_some()
            || self.previous_state.is_some()
            || self.actor_ids.is_some()
            || self.actor_names.is_some()
            || self.subject_matches.is_some()
    }

    /// Whether every condition holds for the ticket at `now`.
    pub fn matches(&self, ticket: &Ticket, now: DateTime<Utc>) -> bool {
        self.matches_with(ticket, now, |re| {
            Some(ticket.subject.as_deref().is_some_and(|s| re.is_match(s)))
        })
        .unwrap_or(false)
    }

    /// Like `matches`, with the subject condition answered by `subject`
    /// (from the ledger's tags when the subject is not kept); `None` when
    /// that answer is needed and unknown.
    pub fn matches_with(
        &self,
        ticket: &Ticket,
        now: DateTime<Utc>,
        subject: impl Fn(&Regex) -> Option<bool>,
    ) -> Option<bool> {
        if !self.matches_but_subject(ticket, now) {
            return Some(false);
        }
        match &self.subject_matches {
            Some(re) => subject(re),
            None => Some(true),
        }
    }

    fn matches_but_subject(&self, ticket: &Ticket, now: DateTime<Utc>) -> bool {
        let age = age_of(ticket, now);
        if let Some(min) = self.older_than
            && age.is_none_or(|a| a < min)
        {
            return false;
        }
        if let Some(max) = self.younger_than
            && age.is_none_or(|a| a >= max)
        {
            return false;
        }
        if let Some(states) = &self.previous_state {
            let state = ticket.previous_state.as_deref().map(normalize);
            if !state.is_some_and(|s| states.contains(&s)) {
                return false;
            }
        }
        let actor = ticket.actor.as_ref();
        if let Some(ids) = &self.actor_ids
            && !actor.and_then(|a| a.id).is_some_and(|id| ids.contains(&id))
        {
            return false;
        }
        if let Some(names) = &self.actor_names {
            let name = actor.and_then(|a| a.name.as_deref()).map(normalize);
            if !name.is_some_and(|n| names.contains(&n)) {
                return false;
            }
        }
        true
    }

    /// Each condition of the rule with whether it holds for the ticket, for
    /// `plan --explain`.
    pub fn explain(&self, ticket: &Ticket, now: DateTime<Utc>) -> Vec<(String, bool)> {
        let age = age_of(ticket, now);
        let shown_age = age.map_or("unknown".to_string(), |a| {
            crate::human::duration(Duration::from_secs(a.as_secs())).to_string()
        });
        let mut out = Vec::new();
        if let Some(min) = self.older_than {
            out.push((
                format!(
                    "deleted more than {} ago (it was {shown_age} ago)",
                    crate::human::duration(min)
                ),
                age.is_some_and(|a| a >= min),
            ));
        }
        if let Some(max) = self.younger_than {
            out.push((
                format!(
                    "deleted less than {} ago (it was {shown_age} ago)",
                    crate::human::duration(max)
                ),
                age.is_some_and(|a| a < max),
            ));
        }
        if let Some(states) = &self.previous_state {
            let state = normalize(ticket.previous_state.as_deref().unwrap_or("(none)"));
            out.push((
                format!("previous state in {} (it was {state})", join(states)),
                states.contains(&state),
            ));
        }
        let actor = ticket.actor.as_ref();
        if let Some(ids) = &self.actor_ids {
            let id = actor.and_then(|a| a.id);
            out.push((
                format!(
                    "deleted by actor id {} (it was {})",
                    join(ids),
                    id.map_or("(none)".into(), |i| i.to_string())
                ),
                id.is_some_and(|i| ids.contains(&i)),
            ));
        }
        if let Some(names) = &self.actor_names {
            let name = actor.and_then(|a| a.name.as_deref()).map(normalize);
            out.push((
                format!(
                    "deleted by {} (it was {})",
                    join(names),
                    name.clone().unwrap_or_else(|| "(none)".into())
                ),
                name.is_some_and(|n| names.contains(&n)),
            ));
        }
        if let Some(re) = &self.subject_matches {
            out.push((
                format!("subject matches /{}/", re.as_str()),
                ticket.subject.as_deref().is_some_and(|s| re.is_match(s)),
            ));
        }
        if out.is_empty() {
            out.push(("every ticket (match_all)".into(), true));
        }
        out
    }

    /// A one-line description of the conditions, for summaries.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.older_than {
            parts.push(format!(
                "deleted more than {} ago",
                crate::human::duration(d)
            ));
        }
        if let Some(d) = self.younger_than {
            parts.push(format!(
                "deleted less than {} ago",
                crate::human::duration(d)
            ));
        }
        if let Some(s) = &self.previous_state {
            parts.push(format!("previous state in {}", join(s)));
        }
        if let Some(ids) = &self.actor_ids {
            parts.push(format!("deleted by actor id {}", join(ids)));
        }
        if let Some(names) = &self.actor_names {
            parts.push(format!("deleted by {}", join(names)));
        }
        if let Some(re) = &self.subject_matches {
            parts.push(format!("subject matches /{}/", re.as_str()));
        }
        if parts.is_empty() {
            "every ticket".into()
        } else {
            parts.join(", ")
        }
    }
}

fn join<T: fmt::Display>(items: &BTreeSet<T>) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A subject pattern's fingerprint in the ledger's tags: its source text,
/// hashed (the pattern itself, which may name people, is not stored).
pub fn subject_fingerprint(re: &Regex) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(re.as_str().as_bytes())[..6])
}

/// One subject pattern's answer for a ticket: the pattern's fingerprint
/// and whether the subject matched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTag {
    pub fingerprint: String,
    pub matched: bool,
}

/// A ticket's subject tags: each subject pattern in force when it was
/// listed, answered. The ledger keeps them (not the subject) so that a row
/// can be decided again without its subject; stored as text, one word a
/// pattern, `<fingerprint>+` for a match and `<fingerprint>-` for none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubjectTags(Vec<SubjectTag>);

impl SubjectTags {
    /// The pattern's answer, `None` when it was not in force at the listing.
    pub fn answer(&self, fingerprint: &str) -> Option<bool> {
        self.0
            .iter()
            .find(|t| t.fingerprint == fingerprint)
            .map(|t| t.matched)
    }

    /// Reads the stored text; a word that is not a tag answers nothing.
    pub fn parse(text: &str) -> Self {
        SubjectTags(
            text.split(' ')
                .filter_map(|word| {
                    let (fingerprint, sign) = word.split_at_checked(word.len().checked_sub(1)?)?;
                    let matched = match sign {
                        "+" => true,
                        "-" => false,
                        _ => return None,
                    };
                    Some(SubjectTag {
                        fingerprint: fingerprint.to_string(),
                        matched,
                    })
                })
                .collect(),
        )
    }
}

impl fmt::Display for SubjectTags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            let sign = if t.matched { '+' } else { '-' };
            write!(f, "{}{}{sign}", if i > 0 { " " } else { "" }, t.fingerprint)?;
        }
        Ok(())
    }
}

/// How long ago the ticket was deleted; `None` when unknown. A deletion time
/// in the future counts as age zero.
pub fn age_of(ticket: &Ticket, now: DateTime<Utc>) -> Option<Duration> {
    let deleted = ticket.deleted_at?;
    Some((now - deleted).to_std().unwrap_or(Duration::ZERO))
}

/// Why a ticket is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// A keep rule matched first.
    Rule(String),
    NoRuleMatched,
    /// In `protect_ids`.
    Protected,
    /// A purge rule matched but the ticket is younger than `min_age`.
    TooYoung {
        rule: String,
    },
    /// A purge rule matched but Zendesk gave no readable `deleted_at`.
    UnknownAge {
        rule: String,
    },
}

/// What the engine decides for one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Purge { rule: String },
    Keep(KeepReason),
}

impl Decision {
    pub fn is_purge(&self) -> bool {
        matches!(self, Self::Purge { .. })
    }

    /// The rule that decided, if any.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Self::Purge { rule }
            | Self::Keep(KeepReason::Rule(rule))
            | Self::Keep(KeepReason::TooYoung { rule })
            | Self::Keep(KeepReason::UnknownAge { rule }) => Some(rule),
            Self::Keep(KeepReason::NoRuleMatched | KeepReason::Protected) => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Purge { rule } => write!(f, "purge by rule {rule:?}"),
            Self::Keep(KeepReason::Rule(rule)) => write!(f, "keep by rule {rule:?}"),
            Self::Keep(KeepReason::NoRuleMatched) => f.write_str("keep: no rule matched"),
            Self::Keep(KeepReason::Protected) => {
                f.write_str("keep: the id is in safety.protect_ids")
            }
            Self::Keep(KeepReason::TooYoung { rule }) => {
                write!(
                    f,
                    "keep: rule {rule:?} matched but the ticket is younger than safety.min_age"
                )
            }
            Self::Keep(KeepReason::UnknownAge { rule }) => {
                write!(
                    f,
                    "keep: rule {rule:?} matched but the deletion time is unknown"
                )
            }
        }
    }
}

/// The ordered rules with the safety floor.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub rules: Vec<RetentionRule>,
    pub min_age: Duration,
    pub protect_ids: BTreeSet<TicketId>,
}

impl Policy {
    /// The first matching rule decides; no match keeps. Protected ids, tickets
    /// younger than `min_age` and tickets of unknown age are never purged.
    pub fn decide(&self, ticket: &Ticket, now: DateTime<Utc>) -> Decision {
        self.decide_with(ticket, now, |re| {
            Some(ticket.subject.as_deref().is_some_and(|s| re.is_match(s)))
        })
        .unwrap_or(Decision::Keep(KeepReason::NoRuleMatched))
    }

    /// Decides from a ledger row whose subject is not kept: each subject
    /// pattern is answered by the tags written when the ticket was listed
    /// (`subject_tags`). `None` when a pattern the decision needs was not
    /// in force then: the ticket must be listed again.
    pub fn decide_tagged(
        &self,
        ticket: &Ticket,
        now: DateTime<Utc>,
        tags: Option<&SubjectTags>,
    ) -> Option<Decision> {
        self.decide_with(ticket, now, |re| {
            tags.and_then(|t| t.answer(&subject_fingerprint(re)))
        })
    }

    /// The ledger's tags for a listed ticket: for each subject pattern in
    /// force, its fingerprint and whether it matched (`None` without one).
    pub fn subject_tags(&self, ticket: &Ticket) -> Option<SubjectTags> {
        let patterns = self.subject_fingerprints();
        if patterns.is_empty() {
            return None;
        }
        let subject = ticket.subject.as_deref();
        let mut tags = Vec::new();
        for rule in &self.rules {
            if let Some(re) = &rule.subject_matches {
                let tag = SubjectTag {
                    fingerprint: subject_fingerprint(re),
                    matched: subject.is_some_and(|s| re.is_match(s)),
                };
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        Some(SubjectTags(tags))
    }

    /// The fingerprints of the subject patterns in force, each once.
    pub fn subject_fingerprints(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .rules
            .iter()
            .filter_map(|r| r.subject_matches.as_ref().map(subject_fingerprint))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn decide_with(
        &self,
        ticket: &Ticket,
        now: DateTime<Utc>,
        subject: impl Fn(&Regex) -> Option<bool>,
    ) -> Option<Decision> {
        if self.protect_ids.contains(&ticket.id) {
            return Some(Decision::Keep(KeepReason::Protected));
        }
        let mut found = None;
        for rule in &self.rules {
            if rule.matches_with(ticket, now, &subject)? {
                found = Some(rule);
                break;
            }
        }
        let Some(rule) = found else {
            return Some(Decision::Keep(KeepReason::NoRuleMatched));
        };
        Some(self.decide_by(rule, ticket, now))
    }

    fn decide_by(&self, rule: &RetentionRule, ticket: &Ticket, now: DateTime<Utc>) -> Decision {
        match rule.action {
            RuleAction::Keep => Decision::Keep(KeepReason::Rule(rule.name.clone())),
            RuleAction::Purge => match age_of(ticket, now) {
                None => Decision::Keep(KeepReason::UnknownAge {
                    rule: rule.name.clone(),
                }),
                Some(age) if age < self.min_age => Decision::Keep(KeepReason::TooYoung {
                    rule: rule.name.clone(),
                }),
                Some(_) => Decision::Purge {
                    rule: rule.name.clone(),
                },
            },
        }
    }

    /// When every purge rule requires a minimum age, the youngest age at
    /// which anything can be purged: a listing sorted by `deleted_at` may
    /// stop at the first ticket younger than this. `None` when some purge rule
    /// can select tickets of any age, and when there is no purge rule at all
    /// (nothing bounds the walk; `ScanPlan::for_policy` says why).
    pub fn purge_horizon(&self) -> Option<Duration> {
        let mut horizon: Option<Duration> = None;
        for rule in self.rules.iter().filter(|r| r.action == RuleAction::Purge) {
            let older = rule.older_than?;
            horizon = Some(horizon.map_or(older, |h| h.min(older)));
        }
        horizon.map(|h| h.max(self.min_age))
    }

    /// Every age at which a decision can change as a ticket grows older:
    /// each rule's `older_than` and `younger_than`, and `min_age`. Between
    /// two of them, a ticket's decision stays what it was.
    pub fn age_thresholds(&self) -> Vec<Duration> {
        let mut out: Vec<Duration> = self
            .rules
            .iter()
            .flat_map(|r| [r.older_than, r.younger_than])
            .flatten()
            .chain([self.min_age])
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A fingerprint of everything a decision reads besides the ticket and
    /// the time: the rules in order, `min_age`, the protected ids.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let text = format!("{:?}|{:?}|{:?}", self.rules, self.min_age, self.protect_ids);
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }

    /// When `ticket` became purgeable by `rule`: its deletion plus the
    /// rule's age (`older_than`) or `min_age`, whichever is later. `None`
    /// when its deletion time is unknown.
    pub fn purgeable_at(&self, rule: &str, ticket: &Ticket) -> Option<DateTime<Utc>> {
        let deleted = ticket.deleted_at?;
        let age = self
            .rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.older_than)
            .unwrap_or_default()
            .max(self.min_age);
        deleted.checked_add_signed(chrono::Duration::from_std(age).ok()?)
    }

    /// Whether a rule reads the subject (which the ledger keeps only when
    /// subjects are recorded).
    pub fn uses_subjects(&self) -> bool {
        self.rules.iter().any(|r| r.subject_matches.is_some())
    }

    pub fn purge_rules(&self) -> impl Iterator<Item = &RetentionRule> {
        self.rules.iter().filter(|r| r.action == RuleAction::Purge)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn subject_tags_read_back_as_written_and_answer_only_their_patterns() {
        let text = "a1b2c3d4e5f6+ 0f0f0f0f0f0f-";
        let tags = SubjectTags::parse(text);
        assert_eq!(tags.to_string(), text);
        assert_eq!(tags.answer("a1b2c3d4e5f6"), Some(true));
        assert_eq!(tags.answer("0f0f0f0f0f0f"), Some(false));
        assert_eq!(
            tags.answer("ffffffffffff"),
            None,
            "a pattern not in force then"
        );
        assert_eq!(SubjectTags::parse("").to_string(), "");
        assert_eq!(SubjectTags::parse("junk + x*").answer("junk"), None);
    }

    use super::*;

    #[test]
    fn thresholds_fingerprint_and_purgeable_time_follow_the_rules() {
        let rule = |older: u64| RetentionRule {
            older_than: Some(Duration::from_secs(older)),
            younger_than: Some(Duration::from_secs(90_000)),
            ..RetentionRule::new("old", RuleAction::Purge)
        };
        let policy = Policy {
            rules: vec![rule(86_400)],
            min_age: Duration::from_secs(3600),
            ..Policy::default()
        };
        assert_eq!(
            policy.age_thresholds(),
            [3600, 86_400, 90_000].map(Duration::from_secs)
        );
        assert_eq!(policy.fingerprint(), policy.clone().fingerprint(), "stable");
        let other = Policy {
            rules: vec![rule(86_401)],
            ..policy.clone()
        };
        assert_ne!(policy.fingerprint(), other.fingerprint());
        let deleted = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let ticket = Ticket {
            id: TicketId::new(1),
            subject: None,
            actor: None,
            deleted_at: Some(deleted),
            previous_state: None,
        };
        assert_eq!(
            policy.purgeable_at("old", &ticket),
            Some(deleted + chrono::Duration::days(1))
        );
        // a rule without an age: from min_age
        assert_eq!(
            policy.purgeable_at("no such rule", &ticket),
            Some(deleted + chrono::Duration::hours(1))
        );
        let unknown = Ticket {
            deleted_at: None,
            ..ticket
        };
        assert_eq!(policy.purgeable_at("old", &unknown), None);
    }

    #[test]
    fn names_and_states_compare_trimmed_caseless_and_normalised() {
        assert_eq!(normalize("Closed "), normalize("closed"));
        assert_eq!(normalize("CLOSED"), normalize("closed"));
        assert_eq!(normalize("Jose\u{301}"), normalize("Jos\u{e9}"));
        assert_eq!(normalize("STRASSE"), normalize("Stra\u{df}e"));
        assert_eq!(normalize(" \tAda Lovelace\n"), normalize("ada lovelace"));
        assert_ne!(normalize("closed"), normalize("close"));
        assert_eq!(normalize("Ada\u{a0}Lovelace"), normalize("ada lovelace"));
        assert_eq!(normalize("Ada  \tLovelace"), normalize("ada lovelace"));
        assert_eq!(normalize("Ａｄａ Lovelace"), normalize("ada lovelace"));
        assert_eq!(normalize("Ada Lovelace\u{200b}"), normalize("ada lovelace"));
        assert_eq!(normalize("pending\u{200b}"), normalize("pending"));
    }

    #[test]
    fn a_keep_rule_is_not_dodged_by_spelling() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let policy = Policy {
            rules: vec![
                RetentionRule {
                    previous_state: Some([normalize("closed")].into()),
                    ..RetentionRule::new("hold-closed", RuleAction::Keep)
                },
                RetentionRule {
                    actor_names: Some([normalize("José Stra\u{df}e")].into()),
                    ..RetentionRule::new("hold-jose", RuleAction::Keep)
                },
                RetentionRule {
                    older_than: Some(Duration::from_secs(86_400)),
                    ..RetentionRule::new("old", RuleAction::Purge)
                },
            ],
            min_age: Duration::from_secs(3600),
            protect_ids: Default::default(),
        };
        let ticket = |state: &str, name: &str| Ticket {
            id: TicketId::new(1),
            subject: None,
            actor: Some(Actor {
                id: Some(5),
                name: Some(name.into()),
            }),
            deleted_at: Some(now - chrono::Duration::days(3)),
            previous_state: Some(state.into()),
        };
        for (state, name) in [
            ("Closed ", "x"),
            ("CLOSED", "x"),
            ("open", "Jose\u{301} STRASSE "),
            ("open", "JOSÉ STRASSE"),
        ] {
            assert!(
                matches!(
                    policy.decide(&ticket(state, name), now),
                    Decision::Keep(KeepReason::Rule(_))
                ),
                "{state:?} / {name:?} dodged a keep rule"
            );
        }
        assert!(matches!(
            policy.decide(&ticket("open", "Ada"), now),
            Decision::Purge { .. }
        ));
    }
    use crate::ticket::Actor;

    fn ticket(id: u64, age_hours: i64, state: &str, actor: u64) -> (Ticket, DateTime<Utc>) {
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        (
            Ticket {
                id: TicketId::new(id),
                subject: Some(format!("Ticket {id}")),
                actor: Some(Actor {
                    id: Some(actor),
                    name: Some("Ada".into()),
                }),
                deleted_at: Some(now - chrono::Duration::hours(age_hours)),
                previous_state: Some(state.into()),
            },
            now,
        )
    }

    fn purge_closed_after(days: u64) -> RetentionRule {
        RetentionRule {
            previous_state: Some(["closed".to_string()].into()),
            older_than: Some(Duration::from_secs(days * 86_400)),
            ..RetentionRule::new("closed", RuleAction::Purge)
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let keep = RetentionRule {
            actor_ids: Some([7].into()),
            ..RetentionRule::new("hold", RuleAction::Keep)
        };
        let policy = Policy {
            rules: vec![keep, purge_closed_after(7)],
            ..Policy::default()
        };
        let (t, now) = ticket(1, 24 * 8, "closed", 7);
        assert_eq!(
            policy.decide(&t, now),
            Decision::Keep(KeepReason::Rule("hold".into()))
        );
        let (t, now) = ticket(1, 24 * 8, "closed", 8);
        assert_eq!(
            policy.decide(&t, now),
            Decision::Purge {
                rule: "closed".into()
            }
        );
        let (t, now) = ticket(1, 24 * 6, "closed", 8);
        assert_eq!(
            policy.decide(&t, now),
            Decision::Keep(KeepReason::NoRuleMatched)
        );
        let (t, now) = ticket(1, 24 * 8, "Open", 8);
        assert_eq!(
            policy.decide(&t, now),
            Decision::Keep(KeepReason::NoRuleMatched)
        );
    }

    #[test]
    fn safety_floor_wins_over_purge_rules() {
        let all = RetentionRule {
            match_all: true,
            ..RetentionRule::new("all", RuleAction::Purge)
        };
        let policy = Policy {
            rules: vec![all],
            min_age: Duration::from_secs(3600),
            protect_ids: [TicketId::new(5)].into(),
        };
        let (t, now) = ticket(5, 100, "closed", 1);
        assert_eq!(
            policy.decide(&t, now),
            Decision::Keep(KeepReason::Protected)
        );
        let (mut t, now) = ticket(6, 0, "closed", 1);
        assert!(matches!(
            policy.decide(&t, now),
            Decision::Keep(KeepReason::TooYoung { .. })
        ));
        t.deleted_at = None;
        assert!(matches!(
            policy.decide(&t, now),
            Decision::Keep(KeepReason::UnknownAge { .. })
        ));
    }

    #[test]
    fn horizon_needs_an_age_on_every_purge_rule() {
        let mut policy = Policy {
            rules: vec![purge_closed_after(7)],
            min_age: Duration::from_secs(3600),
            ..Policy::default()
        };
        assert_eq!(
            policy.purge_horizon(),
            Some(Duration::from_secs(7 * 86_400))
        );
        policy.rules.push(RetentionRule {
            actor_ids: Some([1].into()),
            ..RetentionRule::new("bot", RuleAction::Purge)
        });
        assert_eq!(policy.purge_horizon(), None);
        // no purge rule: no horizon either (no sentinel duration)
        policy.rules.clear();
        assert_eq!(policy.purge_horizon(), None);
        policy
            .rules
            .push(RetentionRule::new("hold", RuleAction::Keep));
        assert_eq!(policy.purge_horizon(), None);
    }
}
