//! CSV with the multiple-choice columns.

use std::path::Path;

use serde_json::Value;

use super::columns::ColumnKeys;
use super::record::{default_id, mcq_item, Ctx};
use super::text::read_lines;
use crate::data::error::{DataError, Loc};
use crate::data::prompt::LETTERS;
use crate::data::Item;

/// How a CSV file gives its choices.
enum ChoiceCols {
    /// One `choices` column: a JSON list, or text separated by `|`.
    One(usize),
    /// Columns `A`, `B`, ... (or `choice_a`, `choice_b`, ...), in order.
    Many(Vec<usize>),
}

/// CSV with a header: `question`, `answer`, and `choices` (JSON list or `a|b|c`) or columns
/// `A`,`B`,... / `choice_a`,`choice_b`,...; optional `context`, `id`. Header names are matched
/// case-insensitively. Rows whose cells are all empty are skipped.
pub(crate) fn load_csv(path: &Path, cols: &ColumnKeys) -> Result<Vec<Item>, DataError> {
    // UTF-8 is checked per line first, so that the error names the line.
    read_lines(path)?;
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { file: path.to_path_buf(), error: source })?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let csv_err = |e: csv::Error| DataError::Csv {
        file: path.to_path_buf(),
        line: e.position().map(|p| p.line() as usize),
        // The template says "CSV error:" already.
        message: e.to_string().trim_start_matches("CSV error: ").to_string(),
    };
    let headers: Vec<String> = rdr.headers().map_err(csv_err)?.iter().map(|h| cols.csv_header(h.trim())).collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let missing = |column: &str, hint: &str| DataError::CsvMissingColumn {
        file: path.to_path_buf(),
        column: column.to_string(),
        found: headers.clone(),
        hint: hint.to_string(),
    };
    let q_col = col("question").ok_or_else(|| missing("question", "add a `question` column"))?;
    let choice_cols = if let Some(c) = col("choices") {
        ChoiceCols::One(c)
    } else {
        let letters: Vec<usize> = LETTERS.iter().map(|l| col(&l.to_ascii_lowercase())).take_while(Option::is_some).flatten().collect();
        let prefixed: Vec<usize> = LETTERS.iter().map(|l| col(&format!("choice_{}", l.to_ascii_lowercase()))).take_while(Option::is_some).flatten().collect();
        let cols = if letters.len() >= prefixed.len() { letters } else { prefixed };
        if cols.len() < 2 {
            return Err(missing(
                "choices",
                "add a `choices` column (a JSON list or `a|b|c`) or one column per choice named A, B, C, ... (or choice_a, choice_b, ...)",
            ));
        }
        ChoiceCols::Many(cols)
    };
    let a_col = col("answer").ok_or_else(|| missing("answer", "add an `answer` column (0-based index or letter A..H)"))?;
    let ctx_col = col("context");
    let id_col = col("id");

    let mut items = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(csv_err)?;
        if rec.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
        let at = Loc::line(path, line);
        let ctx = Ctx::new(at.clone());
        let cell = |i: usize| rec.get(i).unwrap_or("").to_string();
        let question = cell(q_col);
        if question.trim().is_empty() {
            return Err(ctx.missing("question", "the `question` cell is empty"));
        }
        let choices = match &choice_cols {
            ChoiceCols::One(c) => {
                let raw = cell(*c);
                let t = raw.trim();
                if t.is_empty() {
                    return Err(ctx.missing("choices", "the `choices` cell is empty; give a JSON list or `a|b|c`"));
                }
                if t.starts_with('[') {
                    let v: Value = serde_json::from_str(t).map_err(|e| ctx.invalid("choices", format!("not a JSON list of strings: {e}")))?;
                    ctx.choice_list("choices", Some(&v))?
                } else {
                    let cs: Vec<String> = t.split('|').map(|s| s.trim().to_string()).collect();
                    if cs.iter().any(|s| s.is_empty()) {
                        return Err(ctx.invalid("choices", "an empty choice between `|` separators"));
                    }
                    ctx.check_choice_count("choices", cs.len())?;
                    cs
                }
            }
            ChoiceCols::Many(cols) => {
                let mut cs: Vec<String> = cols.iter().map(|&c| cell(c).trim().to_string()).collect();
                while cs.last().is_some_and(|s| s.is_empty()) {
                    cs.pop();
                }
                if let Some(i) = cs.iter().position(|s| s.is_empty()) {
                    return Err(ctx.invalid(&headers[cols[i]], "an empty choice before a non-empty one; fill it or move the later choices up"));
                }
                ctx.check_choice_count("choices", cs.len())?;
                cs
            }
        };
        let answer = Value::String(cell(a_col));
        let label = ctx.parse_answer("answer", Some(&answer), choices.len())?;
        let context = ctx_col.map(cell).filter(|s| !s.trim().is_empty());
        let id = id_col.map(cell).filter(|s| !s.trim().is_empty()).unwrap_or_else(|| default_id(&at));
        items.push(mcq_item(id, context.as_deref(), &question, choices, label));
    }
    if items.is_empty() {
        return Err(DataError::EmptyFile { file: path.to_path_buf() });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use crate::data::formats::test_util::*;
    use crate::data::formats::{detect_format, load_items};
    use crate::data::Format;

    #[test]
    fn csv_layouts() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "q.csv",
            b"id,question,choices,answer,context\nc1,Largest?,\"[\"\"1\"\", \"\"5\"\", \"\"3\"\"]\",1,\nc2,\"Pick, carefully\",red|green|blue,C,Colours.\n,Third,a|b,A,\n",
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Csv);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].id, "c1");
        assert_eq!(items[0].choices, vec!["1", "5", "3"]);
        assert_eq!(items[0].label, 1);
        assert_eq!(
            items[1].prompt,
            "Colours.\nSelect one of the choices that answers the following question: Pick, carefully\nChoices:\nA. red\nB. green\nC. blue\nAnswer:"
        );
        assert_eq!(items[1].label, 2);
        assert_eq!(items[2].id, "q.csv:4");

        let p = write(&d, "letters.csv", b"Question,A,B,C,D,Answer\nQ1,w,x,y,z,D\nQ2,u,v,,,0\n");
        let items = load_items(&p, Format::Csv).unwrap();
        assert_eq!(items[0].choices, vec!["w", "x", "y", "z"]);
        assert_eq!(items[0].label, 3);
        assert_eq!(items[1].choices, vec!["u", "v"]);
        assert_eq!(items[1].answer_labels, vec![" A", " B"]);

        let p = write(&d, "pref.csv", b"question,choice_a,choice_b,answer\nQ,x,y,B\n");
        assert_eq!(load_items(&p, Format::Csv).unwrap()[0].label, 1);

        let p = write(&d, "cols.csv", b"question,options,answer\nQ,a|b,0\n");
        let m = err(&p, Format::Csv);
        assert!(m.contains("cols.csv") && m.contains("missing CSV column `choices`") && m.contains("\"options\""), "{m}");

        let p = write(&d, "noans.csv", b"question,choices\nQ,a|b\n");
        let m = err(&p, Format::Csv);
        assert!(m.contains("noans.csv") && m.contains("`answer`"), "{m}");

        let p = write(&d, "range.csv", b"question,choices,answer\nQ,a|b,0\nQ,a|b,5\n");
        let m = err(&p, Format::Csv);
        assert_located(&m, "range.csv", 3, "answer");

        let p = write(&d, "ragged.csv", b"question,choices,answer\nQ,a|b,0,extra\n");
        let m = err(&p, Format::Csv);
        assert!(m.contains("ragged.csv:2") && m.contains("CSV error"), "{m}");

        let p = write(&d, "headeronly.csv", b"question,choices,answer\n");
        assert!(err(&p, Format::Csv).contains("no records"));

        let p = write(&d, "bad.csv", b"question,choices,answer\nQ,a|b,0\nQ\xff,a|b,1\n");
        let m = err(&p, Format::Csv);
        assert!(m.contains("bad.csv:3:") && m.contains("UTF-8"), "{m}");
    }
}
