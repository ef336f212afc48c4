//! Dead letters an operator can work with: list, show, replay, purge — for the consumer
//! groups of one service, on whichever binder it runs.
//!
//! - The dead letters themselves stay in the binder (`%DLQ%<group>`; RocketMQ cannot delete
//!   a message). What an operator did to each one is kept in the service's own database,
//!   table `dead_letter_status`: how often it was replayed and whether it was purged. A
//!   purged dead letter is no longer listed.
//! - Replay hands the message to its group again through [`Binder::replay`]; the group's
//!   consumers go through the inbox, so replaying a dead letter that was already applied
//!   (or replaying it twice) has no second effect. A replay that fails again dead-letters
//!   a new copy.
//!
//! [`Binder::replay`]: binding::Binder::replay

use sqlx::Row;

use binding::{BinderError, DeadLetter, metrics};

use crate::ServiceHost;

pub const MIGRATIONS: &[&str] = &["
CREATE TABLE dead_letter_status (
    grp TEXT NOT NULL, message_id TEXT NOT NULL,
    replays BIGINT NOT NULL DEFAULT 0, replayed_at BIGINT, purged_at BIGINT,
    PRIMARY KEY (grp, message_id));
"];

/// How many dead letters per group are read to list or to find one by id.
pub const SCAN_LIMIT: usize = 10_000;

/// A dead letter with what was done to it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterEntry {
    #[serde(flatten)]
    pub letter: DeadLetter,
    pub replays: i64,
    pub replayed_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no dead letter {0:?} in this service's groups")]
    NotFound(String),
    #[error(transparent)]
    Binder(#[from] BinderError),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

struct Status {
    replays: i64,
    replayed_at: Option<i64>,
    purged: bool,
}

impl ServiceHost {
    /// The consumer groups this service binds, each once.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> =
            self.bindings().into_iter().map(|b| b.binding.group).collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// The dead letters of this service's groups that were not purged, oldest first per group.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterEntry>, DlqError> {
        let mut out = Vec::new();
        for group in self.groups() {
            for letter in self.binder.dead_letters(&group, SCAN_LIMIT).await? {
                if out.len() == limit {
                    break;
                }
                let status = self.status(&group, &letter.message_id).await?;
                if !status.purged {
                    out.push(DeadLetterEntry {
                        letter,
                        replays: status.replays,
                        replayed_at: status.replayed_at,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Sets the `orderflow_dead_letters{group}` gauge: each group's dead letters not purged
    /// (two reads per group, whatever their number).
    pub async fn count_dead_letters(&self) -> Result<(), DlqError> {
        for group in self.groups() {
            let letters = self.binder.dead_letters(&group, SCAN_LIMIT).await?;
            let purged: std::collections::HashSet<String> = sqlx::query_scalar(
                "SELECT message_id FROM dead_letter_status WHERE grp = $1 AND purged_at IS NOT NULL",
            )
            .bind(&group)
            .fetch_all(self.db.reader())
            .await?
            .into_iter()
            .collect();
            let live = letters.iter().filter(|l| !purged.contains(&l.message_id)).count();
            self.metrics.set(metrics::DEAD_LETTERS, &[("group", &group)], live as f64);
        }
        Ok(())
    }

    /// One dead letter (purged ones included) by its binder message id.
    pub async fn dead_letter(&self, id: &str) -> Result<DeadLetterEntry, DlqError> {
        for group in self.groups() {
            let letters = self.binder.dead_letters(&group, SCAN_LIMIT).await?;
            if let Some(letter) = letters.into_iter().find(|l| l.message_id == id) {
                let status = self.status(&group, id).await?;
                return Ok(DeadLetterEntry {
                    letter,
                    replays: status.replays,
                    replayed_at: status.replayed_at,
                });
            }
        }
        Err(DlqError::NotFound(id.to_owned()))
    }

    /// Delivers dead letter `id` to its group again; returns it with the replay counted.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<DeadLetterEntry, DlqError> {
        let entry = self.dead_letter(id).await?;
        self.binder.replay(&entry.letter).await?;
        let now = events::now_millis();
        self.db.writer().await?.execute(sqlx::query(
            "INSERT INTO dead_letter_status (grp, message_id, replays, replayed_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (grp, message_id) DO UPDATE SET replays = dead_letter_status.replays + 1, replayed_at = $3",
        )
        .bind(&entry.letter.group)
        .bind(id)
        .bind(now))
        .await?;
        self.metrics.inc(metrics::DEAD_LETTERS_REPLAYED, &[("group", &entry.letter.group)], 1);
        tracing::info!(group = %entry.letter.group, id, key = %entry.letter.keys, "dead letter replayed");
        Ok(DeadLetterEntry { replays: entry.replays + 1, replayed_at: Some(now), ..entry })
    }

    /// Hides dead letter `id` from the list for good.
    pub async fn purge_dead_letter(&self, id: &str) -> Result<DeadLetterEntry, DlqError> {
        let entry = self.dead_letter(id).await?;
        self.mark_purged(&entry.letter.group, id).await?;
        tracing::info!(group = %entry.letter.group, id, key = %entry.letter.keys, "dead letter purged");
        Ok(entry)
    }

    /// Purges every listed dead letter; returns how many.
    pub async fn purge_dead_letters(&self) -> Result<usize, DlqError> {
        let entries = self.dead_letters(usize::MAX).await?;
        for e in &entries {
            self.mark_purged(&e.letter.group, &e.letter.message_id).await?;
        }
        tracing::info!(service = self.name, purged = entries.len(), "dead letters purged");
        Ok(entries.len())
    }

    async fn mark_purged(&self, group: &str, id: &str) -> Result<(), sqlx::Error> {
        self.db.writer().await?.execute(sqlx::query(
            "INSERT INTO dead_letter_status (grp, message_id, purged_at) VALUES ($1, $2, $3)
             ON CONFLICT (grp, message_id) DO UPDATE SET purged_at = $3",
        )
        .bind(group)
        .bind(id)
        .bind(events::now_millis()))
        .await?;
        Ok(())
    }

    async fn status(&self, group: &str, id: &str) -> Result<Status, sqlx::Error> {
        let row = sqlx::query("SELECT replays, replayed_at, purged_at FROM dead_letter_status WHERE grp = $1 AND message_id = $2")
            .bind(group)
            .bind(id)
            .fetch_optional(self.db.reader())
            .await?;
        Ok(match row {
            None => Status { replays: 0, replayed_at: None, purged: false },
            Some(r) => Status {
                replays: r.try_get("replays")?,
                replayed_at: r.try_get("replayed_at")?,
                purged: r.try_get::<Option<i64>, _>("purged_at")?.is_some(),
            },
        })
    }
}
