//! Discovery (docs/loadbalancer.md 3.2, steps 1 to 5): observe where this
//! instance takes traffic (its Auto Scaling group, the classic load
//! balancers, the target groups) and plan the drain. What each AWS answer
//! means is decided in `select`, over the plain values `aws` returns.

use appspec::load_balancer::{AsgAction, LoadBalancer, RestoreTo, Selection, TargetGroupId};

use crate::aws::Tg;
use crate::journal::{ClassicLb, Group, Journal, TargetGroup};
use crate::select::{self, Listing, Membership, Ports};
use crate::timeline::{Failure, Timeline};
use crate::Drainer;

/// What discovery found: a plan to drain, or the reason there is nothing.
pub(crate) enum Found {
    Plan(Box<Journal>),
    Nothing(String),
}

/// The instance in its Auto Scaling group, as far as the drain cares.
#[derive(Default)]
struct GroupView {
    /// Set when the group drains the instance in Standby.
    group: Option<Group>,
    /// Classic load balancers and target groups attached to the group.
    load_balancers: Vec<String>,
    target_groups: Vec<String>,
}

impl GroupView {
    /// Does the group's Standby drain this (attached) load balancer?
    fn drains(&self, attached: bool) -> bool {
        self.group.is_some() && attached
    }
}

fn listing(lb: &LoadBalancer, explicit: bool) -> Listing {
    Listing {
        explicit,
        declared: lb.restore_to_for(explicit) == RestoreTo::Declared,
    }
}

impl Drainer {
    pub(crate) async fn discover(
        &self,
        deployment_id: &str,
        group_id: &str,
        lb: &LoadBalancer,
        tl: &mut Timeline,
    ) -> Result<Found, Failure> {
        let view = match self.observe_group(lb, tl).await? {
            Ok(v) => v,
            Err(why) => return Ok(Found::Nothing(why)),
        };
        let classic = self.observe_classic(lb, &view, tl).await?;
        let tgs = self.observe_target_groups(lb, &view, tl).await?;
        let mut group = view.group;
        if let Some(g) = group.as_mut() {
            g.drain_seconds = select::group_drain_seconds(&classic, &tgs);
        }
        // Kept: what serves now, and what `restoreTo: declared` will join.
        if group.is_none() && classic.is_empty() && tgs.is_empty() {
            return select::nothing_selected(lb, &self.host.instance_id)
                .map(Found::Nothing)
                .map_err(Failure::new);
        }
        let ids = select::Ids {
            deployment: deployment_id,
            group: group_id,
            instance: &self.host.instance_id,
        };
        Ok(Found::Plan(Box::new(select::plan(
            ids,
            lb,
            group,
            classic,
            tgs,
            crate::journal::now(),
        ))))
    }

    /// `Err(reason)`: the group's state says there is nothing to drain.
    async fn observe_group(
        &self,
        lb: &LoadBalancer,
        tl: &mut Timeline,
    ) -> Result<Result<GroupView, String>, Failure> {
        let id = self.host.instance_id.as_str();
        if lb.auto_scaling.action == AsgAction::Ignore {
            return Ok(Ok(GroupView::default()));
        }
        let Some((name, state)) = self.clients.asg_membership(id).await? else {
            return Ok(Ok(GroupView::default()));
        };
        tl.note("discover", format!("Auto Scaling group {name}: {state}"));
        let standby = lb.auto_scaling.action == AsgAction::Standby;
        let m = match select::membership(id, &name, &state, standby) {
            Membership::Nothing(why) => return Ok(Err(why)),
            Membership::NotOurs(why) => {
                tl.note("discover", why);
                return Ok(Ok(GroupView::default()));
            }
            m => m,
        };
        let g = self.clients.asg_group(&name).await?;
        let group = (m == Membership::Standby).then(|| Group {
            name: name.clone(),
            state_found: state.clone(),
            min_found: g.min,
            desired_found: g.desired,
            suspended_before: g.suspended.clone(),
            ..Group::default()
        });
        Ok(Ok(GroupView {
            group,
            load_balancers: g.load_balancers,
            target_groups: g.target_groups,
        }))
    }

    async fn observe_classic(
        &self,
        lb: &LoadBalancer,
        view: &GroupView,
        tl: &mut Timeline,
    ) -> Result<Vec<ClassicLb>, Failure> {
        let id = self.host.instance_id.as_str();
        let (found, explicit) = match &lb.classic_load_balancers {
            Selection::Auto => (self.clients.classic(None).await?, false),
            Selection::List(v) if v.is_empty() => (Vec::new(), true),
            Selection::List(v) => (self.clients.classic(Some(v)).await?, true),
        };
        let listing = listing(lb, explicit);
        let mut out = Vec::new();
        for c in found {
            let attached = view.load_balancers.contains(&c.name);
            let Some(pick) = select::pick_classic(&c, id, attached, listing) else {
                continue;
            };
            let draining = self.clients.classic_draining(&c.name).await?;
            let registered = if pick.registered {
                "registered"
            } else {
                "not registered"
            };
            let drain = draining.map_or("off".to_string(), |t| format!("{t} s"));
            tl.note(
                "discover",
                format!(
                    "classic load balancer {}: {registered}, connection draining {drain}",
                    c.name
                ),
            );
            out.push(ClassicLb {
                name: c.name,
                registered: pick.registered,
                via_group: view.drains(attached),
                deregistered: false,
                draining,
                instance_port: c.instance_port,
                layer4: c.layer4,
                health: c.health,
            });
        }
        Ok(out)
    }

    /// The target groups the section selects, each with the ports it names.
    async fn candidate_target_groups(
        &self,
        lb: &LoadBalancer,
    ) -> Result<(Vec<(Tg, Option<Vec<u16>>)>, bool), Failure> {
        let Selection::List(refs) = &lb.target_groups else {
            let mut all = self.clients.target_groups(None, None).await?;
            all.retain(|t| t.instance_type);
            return Ok((all.into_iter().map(|t| (t, None)).collect(), false));
        };
        let mut v = Vec::new();
        for r in refs {
            let (names, arns) = match &r.id {
                TargetGroupId::Name(n) => (Some(vec![n.clone()]), None),
                TargetGroupId::Arn(a) => (None, Some(vec![a.clone()])),
            };
            for t in self.clients.target_groups(names, arns).await? {
                v.push((t, r.ports.clone()));
            }
        }
        Ok((v, true))
    }

    async fn observe_target_groups(
        &self,
        lb: &LoadBalancer,
        view: &GroupView,
        tl: &mut Timeline,
    ) -> Result<Vec<TargetGroup>, Failure> {
        let id = self.host.instance_id.as_str();
        let (candidates, explicit) = self.candidate_target_groups(lb).await?;
        let listing = listing(lb, explicit);
        let mut out = Vec::new();
        for (t, ports) in candidates {
            let attached = view.target_groups.contains(&t.arn);
            let now = self.clients.target_health(&t.arn, id, None).await?;
            let Some(Ports { registered, wanted }) =
                select::pick_ports(&t, &now, ports.as_deref(), attached, listing)
            else {
                continue;
            };
            let delay = self.clients.deregistration_delay(&t.arn).await?;
            tl.note(
                "discover",
                format!(
                    "target group {} ({}): registered on {:?}, deregistration delay {delay} s",
                    t.name, t.arn, registered
                ),
            );
            out.push(TargetGroup {
                arn: t.arn,
                name: t.name,
                ports: wanted,
                registered,
                via_group: view.drains(attached),
                deregistered: false,
                delay,
                layer4: t.layer4,
                health: t.health,
                has_load_balancer: t.has_load_balancer,
            });
        }
        Ok(out)
    }
}
