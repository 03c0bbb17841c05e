//! `run`: the daemon. Wraps `run_cycle` in tokio-cron-scheduler on the
//! configured cron and time zone.
//!
//! Three things the scheduler does not do are done here: a tick that finds
//! the previous run still going is skipped (a lock taken with `try_lock`);
//! the job is re-created after every run, because a job keeps the UTC offset
//! it was created with across DST changes; and shutdown waits for the
//! running cycle (a `TaskTracker`), which itself stops sending and follows
//! its open jobs for the grace period.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{Mutex, mpsc};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Schedule;
use crate::cycle::{CycleContext, RunStatus, Trigger, run_cycle};

/// Shared by every tick.
#[derive(Clone)]
struct Tick {
    ctx: CycleContext,
    running: Arc<Mutex<()>>,
    tracker: TaskTracker,
    /// Told after each run so that the job is re-created.
    ran: mpsc::UnboundedSender<()>,
}

fn make_job(schedule: &Schedule, tick: Tick) -> anyhow::Result<Job> {
    Job::new_async_tz(schedule.cron.as_str(), schedule.timezone, move |_uuid, _scheduler| {
        let tick = tick.clone();
        Box::pin(async move {
            let Ok(guard) = tick.running.clone().try_lock_owned() else {
                tracing::warn!("the previous run is still going; this tick is skipped");
                return;
            };
            if tick.ctx.cancel.is_cancelled() {
                return;
            }
            let ctx = tick.ctx.clone();
            let ran = tick.ran.clone();
            tick.tracker.spawn(async move {
                let _guard = guard;
                match run_cycle(&ctx, Trigger::Cron).await {
                    Ok(report) if report.status == RunStatus::Failed => {
                        tracing::error!(run = report.run_id.get(), error = report.error.as_deref().unwrap_or(""), "scheduled run failed; the next tick tries again");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "scheduled run could not be recorded; the next tick tries again"),
                }
                let _ = ran.send(());
            });
        })
    })
    .with_context(|| format!("cannot schedule cron {:?}", schedule.cron))
}

/// Runs cycles on the schedule until `ctx.cancel` is cancelled, then waits
/// for the running cycle to wind down.
pub async fn run_daemon(schedule: Schedule, ctx: CycleContext) -> anyhow::Result<()> {
    let scheduler = JobScheduler::new()
        .await
        .context("cannot start the scheduler")?;
    let tracker = TaskTracker::new();
    let (ran, mut ran_rx) = mpsc::unbounded_channel();
    let tick = Tick {
        ctx: ctx.clone(),
        running: Arc::new(Mutex::new(())),
        tracker: tracker.clone(),
        ran,
    };
    let mut job_id: Uuid = scheduler
        .add(make_job(&schedule, tick.clone())?)
        .await
        .context("cannot add the cron job")?;
    scheduler
        .start()
        .await
        .context("cannot start the scheduler")?;
    tracing::info!(cron = %schedule.cron, timezone = %schedule.timezone, "daemon started");
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            Some(()) = ran_rx.recv() => {
                // Re-create the job so that its UTC offset follows DST.
                if let Err(e) = scheduler.remove(&job_id).await {
                    tracing::warn!(error = %e, "cannot remove the cron job to refresh it");
                }
                job_id = scheduler.add(make_job(&schedule, tick.clone())?).await.context("cannot re-add the cron job")?;
            }
        }
    }
    tracing::info!("stopping: no new run starts; waiting for the running one");
    let mut scheduler = scheduler;
    if let Err(e) = scheduler.shutdown().await {
        tracing::warn!(error = %e, "the scheduler did not stop cleanly");
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!("stopped");
    Ok(())
}
