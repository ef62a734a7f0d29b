//! Restore (docs/loadbalancer.md 3.3): health gate, ExitStandby, register the exact
//! pairs that were taken out, wait for the load balancers to call the
//! instance healthy, then give back the minimum size and the processes.
//! Exit Standby before restoring the minimum, never the other way round.

use std::time::{Duration, Instant};

use crate::breadcrumb;
use crate::gate;
use crate::journal::{self, Journal, Phase};
use crate::lifecycle::{restore_plan, RestorePlan, Unhealthy, Why};
use crate::select;
use crate::timeline::{Failure, Timeline};
use crate::{Drainer, Outcome};

impl Drainer {
    /// Put this group's instance back, if a journal says it is out.
    /// `Ok(None)`: there was nothing to restore.
    pub async fn restore(
        &self,
        group_id: &str,
        why: Why,
    ) -> Result<Option<Outcome>, (Failure, String)> {
        self.restore_by(group_id, why, None).await
    }

    /// `restore`, its waits (the health gate, the load balancers' health)
    /// cut to end by `deadline`: inside a command, the end of its hour.
    pub async fn restore_by(
        &self,
        group_id: &str,
        why: Why,
        deadline: Option<Instant>,
    ) -> Result<Option<Outcome>, (Failure, String)> {
        let until = Until(deadline);
        let mut tl = Timeline::default();
        let j = match self.store.load(group_id) {
            Ok(Some(j)) => j,
            Ok(None) => return Ok(None),
            Err(e) => return Err((e.into(), tl.text())),
        };
        let plan = restore_plan(j.phase, j.on_failure, why);
        tl.note(
            "restore",
            format!(
                "deployment {} ({why:?}, phase {:?}, onFailure {:?}): {plan:?}",
                j.deployment_id, j.phase, j.on_failure
            ),
        );
        let (gate, if_unhealthy) = match plan {
            RestorePlan::KeepDrained { rearm } => {
                let mut j = j;
                if rearm {
                    j.abandon_at = journal::now() + u64::from(j.abandon_after);
                    let _ = self.save(&j);
                }
                tl.note(
                    "restore",
                    format!(
                        "kept out of service for investigation (onFailure: keepDrained) until abandonAfter {} s",
                        j.abandon_after
                    ),
                );
                return Ok(Some(Outcome {
                    summary: "kept drained (onFailure: keepDrained)".into(),
                    log: tl.text(),
                }));
            }
            RestorePlan::PutBack { gate, if_unhealthy } => (gate, if_unhealthy),
        };
        if gate {
            if let Err(msg) = self.gate(&j, until, &mut tl).await {
                if if_unhealthy == Unhealthy::StayOut {
                    tl.note(
                        "gate",
                        "not healthy: kept out of service (onFailure: restoreIfHealthy)",
                    );
                    return Err((Failure::new(msg), tl.text()));
                }
                // `restore`: LB health checks keep traffic off a broken
                // application; the gate failure is still reported.
                let group_id = j.group_id.clone();
                return match self.put_back(j, false, until, &mut tl).await {
                    Ok(()) => {
                        self.store
                            .audit(&group_id, "restored after a failed health gate");
                        Err((Failure::new(msg), tl.text()))
                    }
                    Err(f) => Err((
                        Failure::new(format!("{msg}; then {}", f.message)),
                        tl.text(),
                    )),
                };
            }
        }
        let group_id = j.group_id.clone();
        let deployment = j.deployment_id.clone();
        match self.put_back(j, true, until, &mut tl).await {
            Ok(()) => {
                self.store
                    .audit(&group_id, &format!("restored {deployment} ({why:?})"));
                Ok(Some(Outcome {
                    summary: format!("back in service in {:.1} s", tl.elapsed().as_secs_f64()),
                    log: tl.text(),
                }))
            }
            Err(f) => Err((f, tl.text())),
        }
    }

    async fn gate(&self, j: &Journal, until: Until, tl: &mut Timeline) -> Result<(), String> {
        let Some(probe) = select::probe(j, &self.host.address) else {
            tl.note("gate", "no health gate");
            return Ok(());
        };
        let mut s = select::gate_settings(j);
        s.timeout = until.cap(s.timeout);
        let successes = s.successes;
        let (probes, took) = gate::wait_healthy(&probe, &s).await?;
        tl.note(
            "gate",
            format!(
                "{probe} healthy ({successes} in a row, {probes} probes, {:.1} s)",
                took.as_secs_f64()
            ),
        );
        Ok(())
    }

    /// Undo what the journal records. `wait_health`: wait for the load
    /// balancers to call the instance healthy (a restore), or only for the
    /// registrations (the undo of a failed drain).
    pub(crate) async fn put_back(
        &self,
        mut j: Journal,
        wait_health: bool,
        until: Until,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let id = self.host.instance_id.clone();
        j.phase = Phase::Restoring;
        self.save(&j)?;
        if let Some(g) = j.group.clone().filter(|g| g.entered_standby) {
            self.exit_standby(&mut j, &g.name, tl).await?;
        }
        let todo = select::registrations(&j, wait_health);
        for i in todo.classic {
            let name = j.classic[i].name.clone();
            j.intent = Some(format!("RegisterInstancesWithLoadBalancer {name}"));
            self.save(&j)?;
            self.clients.classic_register(&name, &id).await?;
            j.classic[i].deregistered = false;
            tl.note("register", format!("classic load balancer {name}"));
        }
        for (i, ports) in todo.target_groups {
            let (arn, name) = (
                j.target_groups[i].arn.clone(),
                j.target_groups[i].name.clone(),
            );
            j.intent = Some(format!("RegisterTargets {arn} {ports:?}"));
            self.save(&j)?;
            self.clients.register_targets(&arn, &id, &ports).await?;
            j.target_groups[i].deregistered = false;
            tl.note(
                "register",
                format!("target group {name} ({arn}) port(s) {ports:?}"),
            );
        }
        j.intent = None;
        self.save(&j)?;
        let health = if wait_health {
            self.wait_healthy(&j, until, tl).await
        } else {
            Ok(())
        };
        if let Some(g) = j.group.clone() {
            self.give_back_minimum(&mut j, &g, tl).await?;
            if let Some(key) = &g.breadcrumb {
                // The minimum is back: the record for other hosts goes. A
                // tag left behind is cleared by the next host that drains,
                // after this one's deadline, its raise clamped to desired.
                match self.clients.delete_group_tag(&g.name, key).await {
                    Ok(()) => tl.note("breadcrumb", format!("{}: {key} removed", g.name)),
                    Err(e) => tl.note("breadcrumb", format!("{e}; tag left")),
                }
            }
            if !g.suspended_by_us.is_empty() {
                j.intent = Some(format!("ResumeProcesses {:?}", g.suspended_by_us));
                self.save(&j)?;
                self.clients.resume(&g.name, &g.suspended_by_us).await?;
                tl.note("resume", format!("{}: {:?}", g.name, g.suspended_by_us));
            }
        }
        self.store.clear(&j.group_id)?;
        health
    }

    /// Out of Standby: the group's minimum back to what the operator had,
    /// as far as the group's desired capacity allows now (`select::restore_min`).
    /// Every host that stood by does this, so the last one back finishes
    /// what another host's lowering started.
    async fn give_back_minimum(
        &self,
        j: &mut Journal,
        g: &journal::Group,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let now = self.clients.asg_group(&g.name).await?;
        let recorded = breadcrumb::recorded_min(&now.tags);
        if g.min_delta == 0 && g.min_original.is_none() && recorded.is_none() {
            return Ok(());
        }
        let plan = select::restore_min(g.min_original, recorded, g.min_delta, now.min, now.desired);
        if let Some(target) = plan.set {
            j.intent = Some(format!(
                "UpdateAutoScalingGroup {} MinSize={target}",
                g.name
            ));
            self.save(j)?;
            self.clients.set_min(&g.name, target).await?;
            tl.note("min-size", format!("{}: {} -> {target}", g.name, now.min));
        }
        if plan.short > 0 {
            tl.note(
                "min-size",
                format!(
                    "{}: {} below the operator's minimum while desired capacity is {}; the last host back from Standby gives it back",
                    g.name, plan.short, now.desired
                ),
            );
        }
        if plan.clear_record {
            match self
                .clients
                .delete_group_tag(&g.name, breadcrumb::MIN_KEY)
                .await
            {
                Ok(()) => tl.note(
                    "breadcrumb",
                    format!("{}: {} removed", g.name, breadcrumb::MIN_KEY),
                ),
                Err(e) => tl.note("breadcrumb", format!("{e}; record left")),
            }
        }
        let grp = j.group.as_mut().expect("group");
        grp.min_delta = 0;
        grp.min_original = None;
        Ok(())
    }

    async fn exit_standby(
        &self,
        j: &mut Journal,
        name: &str,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let id = self.host.instance_id.clone();
        // Still EnteringStandby (a restart mid-drain): ExitStandby would be
        // refused until it gets there.
        let budget = Duration::from_secs(
            u64::from(j.group.as_ref().map(|g| g.drain_seconds).unwrap_or(0)) + 60,
        );
        let state = self
            .poll(budget, || async {
                let s = self.clients.asg_membership(&id).await?;
                Ok(match s {
                    Some((_, st)) if st == "EnteringStandby" => None,
                    Some((_, st)) => Some(st),
                    None => Some(String::new()),
                })
            })
            .await?
            .unwrap_or_else(|| "EnteringStandby".into());
        if state == "Standby" {
            j.intent = Some(format!("ExitStandby {name} {id}"));
            self.save(j)?;
            match self.clients.exit_standby(name, &id).await {
                Ok(()) => tl.note("standby", format!("ExitStandby {name}: accepted")),
                Err(e) if e.message.contains("not in Standby") => {
                    tl.note("standby", format!("{e}: taken as done"))
                }
                Err(e) => return Err(e.into()),
            }
        } else if state.is_empty() || state.starts_with("Terminat") || state.starts_with("Detach") {
            tl.note(
                "standby",
                format!("{id} is {state:?}: never put back into {name}"),
            );
            j.group.as_mut().expect("group").entered_standby = false;
            return Ok(());
        } else if state != "InService" && !state.starts_with("Pending") {
            return Err(Failure::new(format!(
                "Auto Scaling group {name}: cannot exit Standby from {state}"
            )));
        }
        let back = self
            .poll(Duration::from_secs(120), || async {
                let s = self.clients.asg_membership(&id).await?;
                Ok(s.map(|(_, st)| st).filter(|st| st == "InService"))
            })
            .await?;
        if back.is_none() {
            return Err(Failure::new(format!(
                "Auto Scaling group {name}: {id} not InService 120 s after ExitStandby"
            )));
        }
        j.group.as_mut().expect("group").entered_standby = false;
        tl.note("standby", format!("{id} is InService"));
        Ok(())
    }

    async fn wait_healthy(
        &self,
        j: &Journal,
        until: Until,
        tl: &mut Timeline,
    ) -> Result<(), Failure> {
        let id = &self.host.instance_id;
        let budget_for = |h: &journal::HealthCheck| {
            let own = j
                .health_timeout
                .unwrap_or(h.healthy_threshold * (h.interval + h.timeout) + h.interval + 30);
            until.cap(Duration::from_secs(u64::from(own))).as_secs() as u32
        };
        for c in &j.classic {
            let budget = budget_for(&c.health);
            let ok = self
                .poll(Duration::from_secs(u64::from(budget)), || async {
                    let (s, _) = self.clients.classic_health(&c.name, id).await?;
                    Ok((s == "InService").then_some(()))
                })
                .await?;
            if ok.is_none() {
                return Err(Failure::new(format!(
                    "classic load balancer {}: {id} not InService after {budget} s",
                    c.name
                )));
            }
            tl.note("healthy", format!("classic load balancer {}", c.name));
        }
        for t in &j.target_groups {
            if !t.has_load_balancer {
                tl.note(
                    "healthy",
                    format!("target group {} is used by no load balancer (Target.NotInUse): not waited for", t.name),
                );
                continue;
            }
            let budget = budget_for(&t.health);
            let ok = self
                .poll(Duration::from_secs(u64::from(budget)), || async {
                    let now = self
                        .clients
                        .target_health(&t.arn, id, Some(&t.ports))
                        .await?;
                    Ok(now
                        .iter()
                        .all(|x| x.state == "healthy" || x.state == "unavailable")
                        .then_some(()))
                })
                .await?;
            if ok.is_none() {
                return Err(Failure::new(format!(
                    "target group {} ({}) port(s) {:?}: not healthy after {budget} s",
                    t.name, t.arn, t.ports
                )));
            }
            tl.note(
                "healthy",
                format!("target group {} port(s) {:?}", t.name, t.ports),
            );
        }
        Ok(())
    }
}

/// When the restore's waits must end, if they must.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Until(pub(crate) Option<Instant>);

impl Until {
    /// `d`, or less: what is left before the deadline.
    fn cap(self, d: Duration) -> Duration {
        match self.0 {
            Some(t) => d.min(t.saturating_duration_since(Instant::now())),
            None => d,
        }
    }
}
