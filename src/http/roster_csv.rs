//! The `csv` field of a roster import (round2.md §5.2): the file's text read with the `csv`
//! crate into data rows, each validated as assign validates a student. A whole-file problem is
//! the field's 422 message; a row's problem is that row's `invalid_row` verdict.

use csv::{ReaderBuilder, StringRecord};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::http::fields;
use crate::usecases::seats::assign::Student;
use crate::usecases::seats::roster_import::{ImportRow, MAX_ROWS};

const BOM: char = '\u{feff}';
const NOT_UTF8: &str = "The file is not valid UTF-8 text; save it as \"CSV UTF-8\"";
const MISSING_COLUMNS: &str = "Header row must contain the columns student_id and email";
const STUDENT_ID: &str = "student_id";
const EMAIL: &str = "email";

/// A roster read from its text.
#[derive(Debug, Clone)]
pub struct RosterCsv {
    pub rows: Vec<ImportRow>,
    /// The SHA-256 of the text as posted, in hex.
    pub sha256: String,
}

/// Reads the roster: its counted data rows in file order, or the whole-file message.
pub fn read(value: &Value) -> Result<RosterCsv, String> {
    let text = value
        .as_str()
        .ok_or_else(|| "Must be a string".to_owned())?;
    let rows = rows(text)?;
    let sha256 = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(RosterCsv { rows, sha256 })
}

fn rows(text: &str) -> Result<Vec<ImportRow>, String> {
    // A file decoded with the wrong charset carries replacement characters.
    if text.contains(char::REPLACEMENT_CHARACTER) {
        return Err(NOT_UTF8.to_owned());
    }
    let text = text.strip_prefix(BOM).unwrap_or(text);
    if text.trim().is_empty() {
        return Err("Must not be empty".to_owned());
    }

    let records = records(text)?;
    let Some((_, header)) = records.first() else {
        return Err("Must not be empty".to_owned());
    };
    if let Some(row) = unterminated_quote_row(text, &records) {
        return Err(format!(
            "Malformed CSV at row {row}: a quoted field is not closed"
        ));
    }
    let columns = Columns::find(header)?;

    let mut rows = Vec::new();
    for (row, record) in &records[1..] {
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if rows.len() == MAX_ROWS {
            return Err(format!("Must contain at most {MAX_ROWS} data rows"));
        }
        rows.push(columns.row(*row, record));
    }
    if rows.is_empty() {
        return Err("Must contain at least 1 data row".to_owned());
    }
    Ok(rows)
}

/// The positions of the two columns in the header.
struct Columns {
    student_id: usize,
    email: usize,
}

impl Columns {
    /// Names are matched trimmed and case-insensitively; other columns are ignored.
    fn find(header: &StringRecord) -> Result<Self, String> {
        let names: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
        let position = |name: &str| -> Result<Option<usize>, String> {
            let mut found = names.iter().enumerate().filter(|(_, n)| *n == name);
            let first = found.next().map(|(i, _)| i);
            if found.next().is_some() {
                return Err(format!("Header column {name} appears more than once"));
            }
            Ok(first)
        };
        let (student_id, email) = (position(STUDENT_ID), position(EMAIL));
        match (student_id, email) {
            (Ok(Some(student_id)), Ok(Some(email))) => Ok(Self { student_id, email }),
            (Ok(None), _) | (_, Ok(None)) => Err(MISSING_COLUMNS.to_owned()),
            (Err(message), _) | (_, Err(message)) => Err(message),
        }
    }

    /// One data row: a missing cell is empty, extra cells are ignored.
    fn row(&self, row: usize, record: &StringRecord) -> ImportRow {
        let cell = |i: usize| record.get(i).map(str::trim).unwrap_or("");
        let (student_id, email) = (cell(self.student_id), cell(self.email));
        let parsed = validate(student_id, email);
        let given = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        ImportRow {
            row,
            student_id: given(student_id),
            email: given(email),
            parsed,
        }
    }
}

/// The cells through assign's own validators; the first problem, `student_id` first.
fn validate(student_id: &str, email: &str) -> Result<Student, String> {
    let student_id =
        fields::text(1, 250)(&Value::from(student_id)).map_err(|m| format!("{STUDENT_ID}: {m}"))?;
    let email = fields::email(&Value::from(email))
        .map_err(|m| format!("{EMAIL}: {m}"))?
        .into_string();
    Ok(Student { student_id, email })
}

/// The delimiter: `,`, unless the header line has none but has `;` or a tab.
fn delimiter(text: &str) -> u8 {
    let header = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    if header.contains(',') {
        b','
    } else if header.contains(';') {
        b';'
    } else if header.contains('\t') {
        b'\t'
    } else {
        b','
    }
}

/// Every record with its spreadsheet row. The reader skips empty lines without a trace, so
/// the row counts them back from the offset where the reader started each record.
fn records(text: &str) -> Result<Vec<(usize, StringRecord)>, String> {
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter(text))
        .from_reader(text.as_bytes());
    let mut records = Vec::new();
    let mut row = 0;
    let mut record = StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let start = record.position().map_or(0, |p| p.byte() as usize);
                row += 1 + blank_lines_from(text, start);
                records.push((row, record.clone()));
            }
            Err(err) => {
                let at = err.position().map_or(0, |p| p.byte() as usize);
                let row = row + 1 + blank_lines_from(text, at);
                return Err(format!("Malformed CSV at row {row}: {err}"));
            }
        }
    }
    Ok(records)
}

/// How many empty lines the reader skipped from byte `from` (where it stopped after the
/// record before) to the next record. A `\r\n` may be split there: its `\n` is still part of
/// the record before.
fn blank_lines_from(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = from;
    if i > 0 && bytes.get(i - 1) == Some(&b'\r') && bytes.get(i) == Some(&b'\n') {
        i += 1;
    }
    let mut blank = 0;
    loop {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'\r'), Some(b'\n')) => i += 2,
            (Some(b'\r' | b'\n'), _) => i += 1,
            _ => return blank,
        }
        blank += 1;
    }
}

/// The row of the record left inside an open quoted field at the end of the text. The csv
/// crate reads such a field to the end of the file instead of failing, so the end state of the
/// quotes is checked here: a quote opens a field only at its start, and `""` inside a quoted
/// field is an escaped quote, as in RFC 4180 and the crate.
fn unterminated_quote_row(text: &str, records: &[(usize, StringRecord)]) -> Option<usize> {
    let delimiter = delimiter(text);
    let bytes = text.as_bytes();
    let (mut quoted, mut field_start) = (false, true);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    quoted = false;
                }
            }
        } else if b == b'"' && field_start {
            quoted = true;
        }
        field_start = !quoted && (b == delimiter || b == b'\n' || b == b'\r');
        i += 1;
    }
    // The open field runs to the end of the text, so it belongs to the last record.
    quoted.then(|| records.last().map_or(1, |(row, _)| *row))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read_text(text: &str) -> Result<Vec<ImportRow>, String> {
        read(&json!(text)).map(|csv| csv.rows)
    }

    /// `(row, student_id, email)` of each counted row.
    fn cells(text: &str) -> Vec<(usize, Option<String>, Option<String>)> {
        read_text(text)
            .unwrap()
            .into_iter()
            .map(|r| (r.row, r.student_id, r.email))
            .collect()
    }

    fn cell(row: usize, id: &str, email: &str) -> (usize, Option<String>, Option<String>) {
        let given = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        (row, given(id), given(email))
    }

    #[test]
    fn dialects_are_read_alike() {
        let expected = vec![cell(2, "s1", "a@uni.org"), cell(3, "s2", "b@uni.org")];
        for text in [
            "student_id,email\ns1,a@uni.org\ns2,b@uni.org\n",
            "\u{feff}student_id,email\r\ns1,a@uni.org\r\ns2,b@uni.org",
            "Student_ID ; EMAIL\ns1;a@uni.org\ns2;b@uni.org\n",
            "email\tname\tstudent_id\na@uni.org\tAda\ts1\nb@uni.org\tBob\ts2\n",
            "name,email,student_id\n\"Lovelace, Ada\",a@uni.org,s1\n\"Bob \"\"B\"\"\",b@uni.org,s2\n",
        ] {
            assert_eq!(cells(text), expected, "{text:?}");
        }
    }

    #[test]
    fn blank_records_are_skipped_but_keep_their_row() {
        let text =
            "student_id;email;x\n\ns1;a@uni.org\n;;\n  ;  \n\r\ns2;b@uni.org;extra;more\ns3\n";
        assert_eq!(
            cells(text),
            vec![
                cell(3, "s1", "a@uni.org"),
                cell(7, "s2", "b@uni.org"),
                cell(8, "s3", ""),
            ]
        );
        let text = "student_id,email\r\n\r\ns1,a@uni.org\r\n,\r\n\r\ns2,b@uni.org";
        assert_eq!(
            cells(text),
            vec![cell(3, "s1", "a@uni.org"), cell(6, "s2", "b@uni.org")]
        );
        // A quoted line break stays inside its row.
        let text = "student_id,email,note\ns1,a@uni.org,\"two\nlines\"\n\ns2,b@uni.org,x\n";
        assert_eq!(
            cells(text),
            vec![cell(2, "s1", "a@uni.org"), cell(4, "s2", "b@uni.org")]
        );
    }

    #[test]
    fn bad_cells_are_row_verdicts_with_assign_messages() {
        let long = "x".repeat(251);
        let text = format!("student_id,email\n,a@uni.org\n{long},b@uni.org\ns3,bob@uni\ns4,\n");
        let messages: Vec<String> = read_text(&text)
            .unwrap()
            .into_iter()
            .map(|r| r.parsed.unwrap_err())
            .collect();
        assert_eq!(
            messages,
            [
                "student_id: Must not be empty",
                "student_id: Must be at most 250 characters",
                "email: Must be a valid e-mail address",
                "email: Must be a valid e-mail address",
            ]
        );
    }

    #[test]
    fn whole_file_problems_are_the_field_message() {
        let many: String = (0..1001).map(|i| format!("s{i},s{i}@uni.org\n")).collect();
        let cases = [
            (json!(5), "Must be a string".to_owned()),
            (json!(""), "Must not be empty".to_owned()),
            (json!("\u{feff}\r\n \n"), "Must not be empty".to_owned()),
            (
                json!("student_id,email\ns1,caf\u{fffd}@uni.org\n"),
                NOT_UTF8.to_owned(),
            ),
            (
                json!("student_id,mail\ns1,a@uni.org\n"),
                MISSING_COLUMNS.to_owned(),
            ),
            (
                json!("email,Student_Id,student_id \ns1,a@uni.org,x\n"),
                "Header column student_id appears more than once".to_owned(),
            ),
            (
                json!("student_id,email\n\n,,\n"),
                "Must contain at least 1 data row".to_owned(),
            ),
            (
                json!(format!("student_id,email\n{many}")),
                "Must contain at most 1000 data rows".to_owned(),
            ),
            (
                json!("student_id,email\ns1,a@uni.org\n\ns2,\"b@uni.org\ns3,c@uni.org\n"),
                "Malformed CSV at row 4: a quoted field is not closed".to_owned(),
            ),
        ];
        for (value, message) in cases {
            assert_eq!(read(&value).unwrap_err(), message, "{value}");
        }
        let thousand: String = (0..1000).map(|i| format!("s{i},s{i}@uni.org\n")).collect();
        assert_eq!(
            read_text(&format!("student_id,email\n{thousand}"))
                .unwrap()
                .len(),
            1000
        );
    }

    #[test]
    fn quotes_inside_unquoted_fields_are_not_malformed() {
        assert_eq!(
            cells("student_id,email,height\ns1,a@uni.org,5'10\"\n"),
            vec![cell(2, "s1", "a@uni.org")]
        );
    }
}
