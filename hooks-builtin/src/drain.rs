//! Drain (docs/loadbalancer.md 3.2): find where this instance takes traffic, write
//! the plan, then take it out: Standby through its Auto Scaling group, or
//! direct deregistration of the exact (instance, port) pairs, and wait for
//! the load balancers to report the drain finished.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use appspec::load_balancer::{
    AutoScaling, Breadcrumbs, DrainUntil, LoadBalancer, MinSizePolicy, Timeout,
};

use crate::aws::{self, AwsError};
use crate::breadcrumb;
use crate::discover::Found;
use crate::idle::{self, Verdict};
use crate::journal::{self, Journal, Phase};
use crate::select;
use crate::timeline::{Failure, Timeline};
use crate::{Drainer, Outcome};

impl Drainer {
    /// Steps 6 to 10 of the drain; the caller undoes on error.
    pub(crate) async fn take_out(
        &self,
        j: &mut Journal,
        lb: &LoadBalancer,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let id = self.host.instance_id.clone();
        j.phase = Phase::Draining;
        self.save(j)?;
        if let Some(name) = j.group.as_ref().map(|g| g.name.clone()) {
            self.suspend(j, &lb.auto_scaling.suspend_processes, tl)
                .await?;
            self.enter_standby(j, &name, &lb.auto_scaling, tl).await?;
        }
        let todo = select::deregistrations(j);
        for i in todo.classic {
            let name = j.classic[i].name.clone();
            j.classic[i].deregistered = true;
            j.intent = Some(format!("DeregisterInstancesFromLoadBalancer {name}"));
            self.save(j)?;
            self.clients.classic_deregister(&name, &id).await?;
            tl.note("deregister", format!("classic load balancer {name}"));
        }
        for (i, ports) in todo.target_groups {
            let (arn, name) = (
                j.target_groups[i].arn.clone(),
                j.target_groups[i].name.clone(),
            );
            j.target_groups[i].deregistered = true;
            j.intent = Some(format!("DeregisterTargets {arn} {ports:?}"));
            self.save(j)?;
            self.clients.deregister_targets(&arn, &id, &ports).await?;
            tl.note(
                "deregister",
                format!("target group {name} ({arn}) port(s) {ports:?}"),
            );
        }
        j.intent = None;
        self.save(j)?;
        self.wait_drained(j, lb, tl).await?;
        j.phase = Phase::Drained;
        self.save(j)?;
        Ok(())
    }

    async fn suspend(
        &self,
        j: &mut Journal,
        wanted: &[String],
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let g = j.group.as_mut().expect("group");
        let todo =
            select::to_suspend(&g.name, &g.suspended_before, wanted).map_err(Failure::new)?;
        if todo.is_empty() {
            return Ok(());
        }
        g.suspended_by_us = todo.clone();
        let name = g.name.clone();
        j.intent = Some(format!("SuspendProcesses {todo:?}"));
        self.save(j)?;
        self.clients.suspend(&name, &todo).await?;
        tl.note("suspend", format!("{name}: {todo:?}"));
        Ok(())
    }

    async fn enter_standby(
        &self,
        j: &mut Journal,
        name: &str,
        asg: &AutoScaling,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let id = self.host.instance_id.clone();
        let policy = asg.min_size;
        if asg.breadcrumbs != Breadcrumbs::Off {
            self.repair_minimum(name, tl).await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let g = self.clients.asg_group(name).await?;
            if let Some(new_min) = select::lowered_min(g.min, g.desired) {
                if policy == MinSizePolicy::Fail {
                    return Err(Failure::new(format!(
                        "EnterStandby refused: Auto Scaling group {name} has min-size={} and desired-size={}; minSize: fail",
                        g.min, g.desired
                    )));
                }
                let grp = j.group.as_mut().expect("group");
                grp.min_delta += g.min - new_min;
                let original = *grp
                    .min_original
                    .get_or_insert(breadcrumb::recorded_min(&g.tags).unwrap_or(g.min));
                if asg.breadcrumbs != Breadcrumbs::Off {
                    self.leave_breadcrumb(j, name, asg.breadcrumbs, tl).await?;
                    self.record_minimum(j, name, original, asg.breadcrumbs, tl)
                        .await?;
                }
                j.intent = Some(format!("UpdateAutoScalingGroup {name} MinSize={new_min}"));
                self.save(j)?;
                self.clients.set_min(name, new_min).await?;
                tl.note(
                    "min-size",
                    format!("{name}: lowered from {} to {new_min}", g.min),
                );
            }
            j.group.as_mut().expect("group").entered_standby = true;
            j.intent = Some(format!("EnterStandby {name} {id}"));
            self.save(j)?;
            match self.clients.enter_standby(name, &id).await {
                Ok(()) => break,
                // Another host entered Standby between our read and our
                // call: read again and retry (docs/loadbalancer.md 2.1).
                Err(e) if size_race(&e) && attempt < 5 => {
                    tl.note("standby", format!("{e}; reading the group again"));
                    tokio::time::sleep(self.jittered(Duration::from_millis(500))).await;
                }
                Err(e) => {
                    j.group.as_mut().expect("group").entered_standby = false;
                    return Err(e.into());
                }
            }
        }
        tl.note("standby", format!("EnterStandby {name}: accepted"));
        let drain = j.group.as_ref().map(|g| g.drain_seconds).unwrap_or(0);
        let budget = Duration::from_secs(u64::from(drain) + 60);
        let waited = self
            .poll(budget, || async {
                let s = self.clients.asg_membership(&id).await?;
                Ok(s.map(|(_, st)| st).filter(|st| st == "Standby"))
            })
            .await?;
        match waited {
            Some(_) => {
                tl.note("standby", format!("{id} is Standby"));
                Ok(())
            }
            None => Err(Failure::new(format!(
                "Auto Scaling group {name}: {id} not Standby after {} s (longest attached drain {drain} s)",
                budget.as_secs()
            ))),
        }
    }

    /// Tag the group before lowering its minimum, so that another host can
    /// give it back if this one is lost for good. `auto` goes on without
    /// the tag when tagging is not permitted; `true` does not.
    async fn leave_breadcrumb(
        &self,
        j: &mut Journal,
        name: &str,
        mode: Breadcrumbs,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let key = breadcrumb::key(&self.host.instance_id);
        let delta = j.group.as_ref().map(|g| g.min_delta).unwrap_or(0);
        let value = breadcrumb::value(delta, j.abandon_at, &j.deployment_id);
        // Recorded first: a crash after the call still removes the tag.
        j.group.as_mut().expect("group").breadcrumb = Some(key.clone());
        j.intent = Some(format!("CreateOrUpdateTags {name} {key}"));
        self.save(j)?;
        match self.clients.put_group_tag(name, &key, &value).await {
            Ok(()) => {
                tl.note("breadcrumb", format!("{name}: {key} = {value}"));
                Ok(())
            }
            Err(e) if mode == Breadcrumbs::Auto && aws::denied(&e) => {
                j.group.as_mut().expect("group").breadcrumb = None;
                self.save(j)?;
                tl.note(
                    "breadcrumb",
                    format!("{e}; going on without one (breadcrumbs: auto)"),
                );
                tracing::warn!(group = name, error = %e, "cannot tag the Auto Scaling group; the lowered minimum has no breadcrumb");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Record on the group the minimum the operator had (again, if another
    /// host's restore removed it meanwhile), for the hosts whose Standby
    /// this lowering makes room for: they give it back from the record.
    async fn record_minimum(
        &self,
        j: &mut Journal,
        name: &str,
        original: i32,
        mode: Breadcrumbs,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let value = breadcrumb::min_value(original);
        j.intent = Some(format!("CreateOrUpdateTags {name} {}", breadcrumb::MIN_KEY));
        self.save(j)?;
        match self
            .clients
            .put_group_tag(name, breadcrumb::MIN_KEY, &value)
            .await
        {
            Ok(()) => {
                tl.note(
                    "breadcrumb",
                    format!("{name}: {} = {value}", breadcrumb::MIN_KEY),
                );
                Ok(())
            }
            Err(e) if mode == Breadcrumbs::Auto && aws::denied(&e) => {
                tl.note(
                    "breadcrumb",
                    format!("{e}; the operator's minimum is not recorded on the group"),
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Give back minimums that hosts lost for good left lowered (their
    /// breadcrumbs say by how much). Best effort: this host's own drain
    /// does not depend on it.
    async fn repair_minimum(&self, name: &str, tl: &mut Timeline) {
        let g = match self.clients.asg_group(name).await {
            Ok(g) => g,
            Err(e) => {
                tl.note("breadcrumb", format!("{e}; stale breadcrumbs not checked"));
                return;
            }
        };
        let stale = breadcrumb::stale(&g.tags, &g.members, &self.host.instance_id, journal::now());
        for c in stale {
            let g = match self.clients.asg_group(name).await {
                Ok(g) => g,
                Err(e) => {
                    tl.note("breadcrumb", format!("{e}; repair stopped"));
                    return;
                }
            };
            // Never above desired (that would launch an instance); raised
            // before the tag goes, so a crash between repeats a clamped
            // raise rather than losing the record. Toward the group's record
            // of the operator's minimum when there is one (an absolute
            // target: no host adds to it twice).
            let plan = select::restore_min(
                None,
                breadcrumb::recorded_min(&g.tags),
                c.delta,
                g.min,
                g.desired,
            );
            let target = plan.set.unwrap_or(g.min);
            if target > g.min {
                if let Err(e) = self.clients.set_min(name, target).await {
                    tl.note("breadcrumb", format!("{e}; repair stopped"));
                    return;
                }
            }
            match self.clients.delete_group_tag(name, &c.key).await {
                Ok(()) => {
                    tl.note(
                        "breadcrumb",
                        format!(
                            "{name}: {} left the minimum lowered by {}; {} -> {target}",
                            c.instance, c.delta, g.min
                        ),
                    );
                    tracing::warn!(group = name, instance = %c.instance, delta = c.delta, from = g.min, to = target, "repaired a minimum size another host left lowered");
                }
                Err(e) => tl.note("breadcrumb", format!("{e}; tag {} left", c.key)),
            }
        }
    }

    async fn wait_drained(
        &self,
        j: &Journal,
        lb: &LoadBalancer,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let id = &self.host.instance_id;
        let timeout = lb.drain_timeout;
        let quiet = (lb.drain_until == DrainUntil::Idle)
            .then(|| Duration::from_secs(u64::from(lb.idle_for)));
        for c in j.classic.iter().filter(|c| c.deregistered) {
            let draining = c.draining.unwrap_or(0);
            let w = Wait {
                what: format!("classic load balancer {}", c.name),
                budget: limit(timeout, draining + 30),
                ports: c.instance_port.into_iter().collect(),
                layer4: c.layer4,
                native: format!("connection draining {draining} s"),
            };
            self.wait_one(&w, quiet, timeout, tl, || async {
                let (state, _) = self.clients.classic_health(&c.name, id).await?;
                Ok(state == "OutOfService")
            })
            .await?;
        }
        for t in j.target_groups.iter().filter(|t| t.deregistered) {
            let w = Wait {
                what: format!(
                    "target group {} ({}) port(s) {:?}",
                    t.name, t.arn, t.registered
                ),
                budget: limit(timeout, t.delay + 30),
                ports: t.registered.clone(),
                layer4: t.layer4,
                native: format!("deregistration_delay {} s", t.delay),
            };
            self.wait_one(&w, quiet, timeout, tl, || async {
                let now = self
                    .clients
                    .target_health(&t.arn, id, Some(&t.registered))
                    .await?;
                Ok(now
                    .iter()
                    .all(|x| x.state == "unused" || x.state.is_empty()))
            })
            .await?;
        }
        Ok(())
    }

    /// Wait for one load balancer: until it reports the instance
    /// deregistered or, with `quiet` (`drainUntil: idle`), until the
    /// host's connections to its ports have been idle that long.
    async fn wait_one<F, Fut>(
        &self,
        w: &Wait,
        quiet: Option<Duration>,
        timeout: Timeout,
        tl: &mut Timeline,
        mut deregistered: F,
    ) -> Result<(), Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool, AwsError>>,
    {
        let t0 = Instant::now();
        let unreadable = Cell::new(false);
        let quiet = quiet.filter(|_| !w.ports.is_empty());
        let done = self
            .poll(w.budget, || {
                let asked = deregistered();
                let (t0, unreadable) = (&t0, &unreadable);
                async move {
                    if asked.await? {
                        return Ok(Some(End::Deregistered));
                    }
                    let Some(q) = quiet.filter(|q| t0.elapsed() >= *q) else {
                        return Ok(None);
                    };
                    Ok(self.host_idle(w, q, unreadable).map(End::Idle))
                }
            })
            .await?;
        let what = match done {
            Some(End::Deregistered) => Some(w.what.clone()),
            Some(End::Idle(v)) => Some(format!(
                "{}: idle after {:.1} s ({} connection(s) open, none in flight); the load balancer still counts its delay",
                w.what,
                t0.elapsed().as_secs_f64(),
                v.open
            )),
            None => None,
        };
        settle(what, timeout, &w.what, tl, || {
            format!(
                "{} still draining after {} s ({})",
                w.what,
                w.budget.as_secs(),
                w.native
            )
        })
    }

    /// The host's connections to `w`'s ports, judged; `None` while busy or
    /// when the socket tables cannot be read (said once: the drain then
    /// ends when the load balancer reports it).
    fn host_idle(&self, w: &Wait, quiet: Duration, unreadable: &Cell<bool>) -> Option<Verdict> {
        match self.sockets.connections(&self.host.address, &w.ports) {
            Ok(conns) => Some(idle::judge(&conns, &w.ports, w.layer4, quiet)).filter(|v| v.idle()),
            Err(e) => {
                if !unreadable.replace(true) {
                    tracing::warn!(error = %e, ports = ?w.ports, "cannot read the host's connections; drainUntil: idle waits for the load balancer instead");
                }
                None
            }
        }
    }

    /// The drain of a deployment: plan, journal, take out. Any failure is
    /// undone before it is reported: the old application still serves.
    pub async fn drain(
        &self,
        deployment_id: &str,
        group_id: &str,
        lb: &LoadBalancer,
    ) -> Result<Outcome, (Failure, String)> {
        let mut tl = Timeline::default();
        match self.store.load(group_id) {
            Ok(Some(mut j)) => {
                // A journal from an earlier deployment (a failed one kept
                // drained, or one whose restore is pending): adopt it, so
                // the original values are kept and nothing drains twice.
                tl.note(
                    "adopt",
                    format!(
                        "already out of service since deployment {} ({:?})",
                        j.deployment_id, j.phase
                    ),
                );
                j.deployment_id = deployment_id.to_string();
                j.abandon_after = lb.abandon_after;
                j.abandon_at = journal::now() + u64::from(lb.abandon_after);
                j.on_failure = lb.on_failure.into();
                if j.phase < Phase::Drained {
                    if let Err(f) = self.take_out(&mut j, lb, &mut tl).await {
                        return Err(self.undo(j, f, tl).await);
                    }
                }
                j.phase = Phase::Drained;
                self.save(&j).map_err(|e| (e.into(), tl.text()))?;
                return Ok(Outcome {
                    summary: "already drained by an earlier deployment".into(),
                    log: tl.text(),
                });
            }
            Ok(None) => {}
            Err(e) => return Err((e.into(), tl.text())),
        }
        let plan = match self.discover(deployment_id, group_id, lb, &mut tl).await {
            Ok(Found::Plan(j)) => *j,
            Ok(Found::Nothing(why)) => {
                tl.note("skip", why.clone());
                return Ok(Outcome {
                    summary: why,
                    log: tl.text(),
                });
            }
            Err(f) => return Err((f, tl.text())),
        };
        let mut j = plan;
        if let Err(e) = self.save(&j) {
            return Err((e.into(), tl.text()));
        }
        self.store
            .audit(group_id, &format!("drain {deployment_id} planned"));
        match self.take_out(&mut j, lb, &mut tl).await {
            Ok(()) => {
                let summary = format!(
                    "out of service in {:.1} s ({})",
                    tl.elapsed().as_secs_f64(),
                    describe(&j)
                );
                self.store
                    .audit(group_id, &format!("drained {deployment_id}"));
                Ok(Outcome {
                    summary,
                    log: tl.text(),
                })
            }
            Err(f) => Err(self.undo(j, f, tl).await),
        }
    }

    async fn undo(&self, j: Journal, f: Failure, mut tl: Timeline) -> (Failure, String) {
        tl.note(
            "undo",
            format!("drain failed ({}); putting back", f.message),
        );
        let group_id = j.group_id.clone();
        match self
            .put_back(j, false, crate::restore::Until(None), &mut tl)
            .await
        {
            Ok(()) => tl.note("undo", "back in service as found"),
            Err(e) => tl.note("undo", format!("could not put back: {}", e.message)),
        }
        self.store
            .audit(&group_id, &format!("drain failed: {}", f.message));
        (f, tl.text())
    }
}

/// The size ValidationError EnterStandby gives when the group's sizes
/// changed under us.
fn size_race(e: &AwsError) -> bool {
    e.code == "ValidationError" && e.message.contains("min-size")
}

/// How one drain wait ended.
enum End {
    /// The load balancer reports the instance deregistered.
    Deregistered,
    /// The host's connections went idle (`drainUntil: idle`).
    Idle(Verdict),
}

/// One load balancer to wait for.
struct Wait {
    /// It, for the timeline.
    what: String,
    budget: Duration,
    /// The ports its traffic reaches on this host.
    ports: Vec<u16>,
    layer4: bool,
    /// Its own drain setting, for the message.
    native: String,
}

/// The end of one drain wait: done (`Some`, what to note); still draining
/// past an explicit `drainTimeout` (go on, noted); or past the load
/// balancer's own timeout (`auto`: an error).
fn settle(
    done: Option<String>,
    timeout: Timeout,
    what: &str,
    tl: &mut Timeline,
    failure: impl FnOnce() -> String,
) -> Result<(), Failure> {
    match (done, timeout) {
        (Some(note), _) => tl.note("drained", note),
        (None, Timeout::Seconds(s)) => tl.note(
            "drained",
            format!("{what} still draining after drainTimeout {s} s; continuing"),
        ),
        (None, Timeout::Auto) => return Err(Failure::new(failure())),
    }
    Ok(())
}

fn limit(t: Timeout, native: u32) -> Duration {
    Duration::from_secs(u64::from(match t {
        Timeout::Auto => native,
        Timeout::Seconds(s) => s,
    }))
}

/// What the journal says was taken out, for the summary line.
pub(crate) fn describe(j: &Journal) -> String {
    let mut parts = Vec::new();
    if let Some(g) = &j.group {
        if g.entered_standby {
            parts.push(format!("Standby in {}", g.name));
        }
    }
    for c in j.classic.iter().filter(|c| c.deregistered) {
        parts.push(format!("classic {}", c.name));
    }
    for t in j.target_groups.iter().filter(|t| t.deregistered) {
        parts.push(format!("target group {} {:?}", t.name, t.registered));
    }
    if parts.is_empty() {
        "nothing changed".into()
    } else {
        parts.join(", ")
    }
}
