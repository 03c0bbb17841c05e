//! Where a document's purged tickets go, and how they get there: a
//! document is rendered with [`ROWS_MARK`] in their place, and
//! [`write_document`] streams the rows from the store's listing into it, a
//! bounded buffer at a time: a period of a million purges costs the memory
//! of one row. Each row is written in its document's style.

use std::fmt::Write as _;

use askama::Template;
use serde::Serialize;

use super::escape::{md, utc};
use crate::audit::{PurgeListing, PurgedTicket};
use crate::evidence::PurgedRows;

/// The place of a document's purged tickets. Two control characters: a
/// recorded text cannot hold them unnoticed (see [`write_document`]).
pub(super) const ROWS_MARK: &str = "\u{1}purged-rows\u{1}";

/// A document's purged tickets serialise as the mark their rows replace.
impl Serialize for PurgedRows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(ROWS_MARK)
    }
}

/// How each purged ticket is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStyle {
    Html { with_subjects: bool },
    Text,
    Markdown,
    Json,
}

/// One purged ticket as a row of a page's table.
#[derive(Template)]
#[template(path = "purged_row.html")]
struct PurgedRowHtml<'a> {
    p: &'a PurgedTicket,
    rule: &'a str,
    job: &'a str,
    requested: String,
    completed: String,
    recorded: String,
    subject: Option<&'a str>,
}

impl RowStyle {
    fn write(self, out: &mut String, p: &PurgedTicket, first: bool) -> anyhow::Result<()> {
        match self {
            RowStyle::Html { with_subjects } => {
                let row = PurgedRowHtml {
                    p,
                    rule: p.rule.as_deref().unwrap_or("?"),
                    job: p.zendesk_job_id.as_deref().unwrap_or(""),
                    requested: utc(p.requested_at.as_deref().unwrap_or("")),
                    completed: utc(p.completed_at.as_deref().unwrap_or("")),
                    recorded: utc(&p.verified_at),
                    subject: with_subjects.then(|| p.subject.as_deref().unwrap_or("")),
                };
                row.render_into(out)?;
                out.push('\n');
            }
            RowStyle::Text => writeln!(
                out,
                "    {} by {} job {} requested {} completed {}",
                p.ticket_id,
                p.rule.as_deref().unwrap_or("?"),
                p.zendesk_job_id.as_deref().unwrap_or("-"),
                p.requested_at.as_deref().unwrap_or("-"),
                p.completed_at.as_deref().unwrap_or("-")
            )?,
            RowStyle::Markdown => writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                p.ticket_id,
                md(p.rule.as_deref().unwrap_or("?")),
                p.run_id,
                md(p.zendesk_job_id.as_deref().unwrap_or("")),
                p.requested_at.as_deref().unwrap_or(""),
                p.completed_at.as_deref().unwrap_or("")
            )?,
            RowStyle::Json => write!(
                out,
                "{}\n    {}",
                if first { "" } else { "," },
                serde_json::to_string(p)?
            )?,
        }
        Ok(())
    }
}

/// A document as JSON: its purged tickets an array streamed in place.
pub fn json_document(document: &impl Serialize) -> anyhow::Result<String> {
    let text = serde_json::to_string_pretty(document)?;
    let mark = serde_json::to_string(ROWS_MARK)?;
    anyhow::ensure!(
        text.matches(&mark).count() == 1,
        "internal: a JSON document without one place for its rows"
    );
    Ok(text.replacen(&mark, &format!("[{ROWS_MARK}\n  ]"), 1) + "\n")
}

/// Writes `document` to `out`, with the listing's rows streamed where its
/// mark stands, a bounded buffer at a time.
pub async fn write_document(
    document: &str,
    style: RowStyle,
    listing: &mut PurgeListing,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    // the mark is two control characters: a recorded text holding it
    // (an error Zendesk sent, a rule's name) must not move the rows
    anyhow::ensure!(
        document.matches(ROWS_MARK).count() == 1,
        "a recorded text holds the control characters that mark where the purged tickets go: the document would be wrong, so none is written; `audit run` and `audit ticket` show the records"
    );
    let Some((head, tail)) = document.split_once(ROWS_MARK) else {
        anyhow::bail!("internal: a document without a place for its rows");
    };
    out.write_all(head.as_bytes())?;
    let mut buffer = String::new();
    let mut first = true;
    listing
        .for_each(|p| {
            style.write(&mut buffer, p, first)?;
            first = false;
            if buffer.len() >= 64 * 1024 {
                out.write_all(buffer.as_bytes())?;
                buffer.clear();
            }
            Ok(())
        })
        .await?;
    out.write_all(buffer.as_bytes())?;
    out.write_all(tail.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RunId;
    use crate::zendesk::TicketId;

    fn ticket(rule: &str, subject: &str) -> PurgedTicket {
        PurgedTicket {
            ticket_id: TicketId::new(7),
            rule: Some(rule.to_string()),
            run_id: RunId::new(3),
            zendesk_job_id: Some("job\"1".to_string()),
            requested_at: Some("2026-11-29T14:22:45.913Z".to_string()),
            completed_at: None,
            verified_at: "2026-11-29T14:23:00.000Z".to_string(),
            detail: None,
            subject: Some(subject.to_string()),
        }
    }

    #[test]
    fn a_page_row_escapes_what_was_recorded_and_cannot_forge_the_mark() {
        let p = ticket("r<b>", &format!("<script>x</script>{ROWS_MARK}"));
        let mut out = String::new();
        RowStyle::Html {
            with_subjects: true,
        }
        .write(&mut out, &p, true)
        .unwrap();
        assert_eq!(
            out,
            "<tr class=\"purged-row\" data-ticket=\"7\"><td class=\"n\">7</td><td>r&lt;b&gt;</td><td class=\"n\">3</td><td class=\"mono\">job&quot;1</td><td>2026-11-29 14:22:45.913</td><td></td><td>2026-11-29 14:23:00.000</td><td>&lt;script&gt;x&lt;/script&gt;\u{fffd}purged-rows\u{fffd}</td></tr>\n"
        );
        let mut without = String::new();
        RowStyle::Html {
            with_subjects: false,
        }
        .write(&mut without, &p, true)
        .unwrap();
        assert!(!without.contains("script"), "{without}");
    }
}
