//! Property tests of the rule engine: whatever the rules, the safety floor
//! holds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use zd_retention::rules::{Decision, Policy, RetentionRule, RuleAction};
use zd_retention::ticket::{Actor, Ticket};

use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

const STATES: [&str; 7] = [
    "new", "open", "pending", "hold", "solved", "closed", "custom",
];

fn rule() -> impl Strategy<Value = RetentionRule> {
    (
        any::<bool>(),
        proptest::option::of(0u64..40 * 86_400),
        proptest::option::of(0u64..40 * 86_400),
        proptest::option::of(proptest::sample::subsequence(STATES.to_vec(), 0..4)),
        proptest::option::of(proptest::collection::btree_set(0u64..10, 0..3)),
        any::<bool>(),
    )
        .prop_map(
            |(purge, older, younger, states, actors, all)| RetentionRule {
                older_than: older.map(Duration::from_secs),
                younger_than: younger.map(Duration::from_secs),
                previous_state: states.map(|s| s.into_iter().map(str::to_string).collect()),
                actor_ids: actors,
                match_all: all,
                ..RetentionRule::new(
                    format!("r{}", u8::from(purge)),
                    if purge {
                        RuleAction::Purge
                    } else {
                        RuleAction::Keep
                    },
                )
            },
        )
}

fn ticket() -> impl Strategy<Value = Ticket> {
    (
        1u64..50,
        proptest::option::of(0i64..40 * 86_400),
        0usize..STATES.len(),
        proptest::option::of(0u64..10),
    )
        .prop_map(|(id, age, state, actor)| Ticket {
            id: id.into(),
            subject: None,
            actor: actor.map(|a| Actor {
                id: Some(a),
                name: None,
            }),
            deleted_at: age.map(|a| now() - chrono::Duration::seconds(a)),
            previous_state: Some(STATES[state].to_string()),
        })
}

proptest! {
    #[test]
    fn protected_and_young_tickets_are_never_purged(
        rules in proptest::collection::vec(rule(), 0..6),
        tickets in proptest::collection::vec(ticket(), 1..40),
        min_age in 0u64..10 * 86_400,
        protect in proptest::collection::btree_set(1u64..50, 0..10),
    ) {
        let policy = Policy { rules, min_age: Duration::from_secs(min_age), protect_ids: protect.iter().map(|&i| i.into()).collect() };
        for t in &tickets {
            let decision = policy.decide(t, now());
            if decision.is_purge() {
                prop_assert!(!protect.contains(&t.id.get()), "protected id {} purged", t.id);
                let age = (now() - t.deleted_at.expect("a purged ticket has a known age")).to_std().unwrap();
                prop_assert!(age >= Duration::from_secs(min_age), "ticket {} of age {:?} purged under min_age {}", t.id, age, min_age);
            }
        }
    }

    #[test]
    fn no_rule_means_nothing_is_purged(tickets in proptest::collection::vec(ticket(), 1..40)) {
        let policy = Policy::default();
        for t in &tickets {
            prop_assert!(!policy.decide(t, now()).is_purge());
        }
    }

    #[test]
    fn the_horizon_never_hides_a_purge(
        rules in proptest::collection::vec(rule(), 0..6),
        tickets in proptest::collection::vec(ticket(), 1..40),
        min_age in 0u64..10 * 86_400,
    ) {
        // the early stop skips tickets younger than the horizon: none of
        // them may be one the rules would purge
        let policy = Policy { rules, min_age: Duration::from_secs(min_age), ..Policy::default() };
        if let Some(h) = policy.purge_horizon() {
            for t in &tickets {
                if let Some(d) = t.deleted_at {
                    let age = (now() - d).to_std().unwrap_or_default();
                    if age < h {
                        let purged = matches!(policy.decide(t, now()), Decision::Purge { .. });
                        prop_assert!(!purged, "ticket {} younger than the horizon is purged", t.id);
                    }
                }
            }
        }
    }
}
