//! Breadcrumbs (docs/loadbalancer.md 3.4): while this host holds an Auto Scaling
//! group's minimum lowered, a group tag says so, so that another host of the
//! group can give the minimum back if this one is lost for good (its
//! journal dies with it). One tag per instance, never propagated to
//! instances. Pure: the drain and restore make the calls.

/// The tag key's prefix; the instance id follows.
pub const PREFIX: &str = "codedeploy-agent:min-lowered:";

/// The group tag that records the minimum the operator had, while any host
/// holds it lowered: a host that never lowered it itself (its Standby was
/// room another host's lowering made) gives it back from this.
pub const MIN_KEY: &str = "codedeploy-agent:min-size";

/// The record's value: `min=N`.
pub fn min_value(min: i32) -> String {
    format!("min={min}")
}

/// The operator's minimum, if the group's tags record it.
pub fn recorded_min(tags: &[(String, String)]) -> Option<i32> {
    tags.iter()
        .find(|(k, _)| k == MIN_KEY)
        .and_then(|(_, v)| v.strip_prefix("min=")?.parse().ok())
        .filter(|m| *m >= 0)
}

/// A breadcrumb read back from a group tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crumb {
    /// The tag's key.
    pub key: String,
    /// The instance that lowered the minimum.
    pub instance: String,
    /// How much that host lowered the minimum.
    pub delta: i32,
    /// Unix seconds after which that host would have restored on its own
    /// (its `abandonAt`).
    pub until: u64,
}

/// The tag key of `instance`.
pub fn key(instance: &str) -> String {
    format!("{PREFIX}{instance}")
}

/// The tag value: `delta=N;until=T;deployment=D`.
pub fn value(delta: i32, until: u64, deployment: &str) -> String {
    format!("delta={delta};until={until};deployment={deployment}")
}

/// A breadcrumb from a tag, if it is one.
pub fn parse(key: &str, value: &str) -> Option<Crumb> {
    let instance = key.strip_prefix(PREFIX)?;
    let field = |name: &str| {
        value
            .split(';')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    Some(Crumb {
        key: key.to_string(),
        instance: instance.to_string(),
        delta: field("delta")?.parse().ok().filter(|d| *d > 0)?,
        until: field("until")?.parse().ok()?,
    })
}

/// Breadcrumbs of other hosts that no host will act on any more: the
/// instance left the group (terminated, detached: its journal is gone), or
/// it is no longer in Standby and its own deadline passed. A host that is
/// alive and restoring leaves Standby before it gives the minimum back;
/// waiting for its deadline keeps us from giving it back twice.
pub fn stale(
    tags: &[(String, String)],
    members: &[(String, String)],
    me: &str,
    now: u64,
) -> Vec<Crumb> {
    tags.iter()
        .filter_map(|(k, v)| parse(k, v))
        .filter(|c| c.instance != me)
        .filter(|c| match members.iter().find(|(id, _)| *id == c.instance) {
            None => true,
            Some((_, state)) => {
                !matches!(state.as_str(), "Standby" | "EnteringStandby") && now > c.until
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(instance: &str, delta: i32, until: u64) -> (String, String) {
        (key(instance), value(delta, until, "d-1"))
    }

    #[test]
    fn the_operators_minimum_is_recorded_apart_from_the_breadcrumbs() {
        let tags = vec![
            (MIN_KEY.to_string(), min_value(4)),
            tag("i-1", 1, 10),
            ("team".to_string(), "web".to_string()),
        ];
        assert_eq!(recorded_min(&tags), Some(4));
        assert_eq!(recorded_min(&tags[1..]), None);
        assert_eq!(recorded_min(&[(MIN_KEY.into(), "min=x".into())]), None);
        assert!(parse(MIN_KEY, &min_value(4)).is_none(), "not a breadcrumb");
    }

    #[test]
    fn round_trips_and_ignores_other_tags() {
        let (k, v) = tag("i-1", 2, 500);
        assert_eq!(
            parse(&k, &v),
            Some(Crumb {
                key: k.clone(),
                instance: "i-1".into(),
                delta: 2,
                until: 500
            })
        );
        assert_eq!(parse("Name", "web"), None);
        assert_eq!(
            parse(&k, "delta=0;until=5"),
            None,
            "a zero delta is nothing to repair"
        );
        assert_eq!(parse(&k, "garbage"), None);
    }

    #[test]
    fn only_crumbs_nobody_will_act_on_are_stale() {
        let tags = vec![
            tag("i-gone", 1, 9999),
            tag("i-standby", 1, 100),
            tag("i-back-early", 1, 9999),
            tag("i-back-late", 1, 100),
            tag("i-me", 1, 100),
            ("Name".into(), "web".into()),
        ];
        let members: Vec<(String, String)> = [
            ("i-standby", "Standby"),
            ("i-back-early", "InService"),
            ("i-back-late", "InService"),
            ("i-me", "InService"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let s: Vec<String> = stale(&tags, &members, "i-me", 1000)
            .into_iter()
            .map(|c| c.instance)
            .collect();
        assert_eq!(s, vec!["i-gone", "i-back-late"]);
    }
}
