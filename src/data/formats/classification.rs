//! Plain text classification: `text`, `label`, optional `id`; the label set comes from the file
//! (labels in order of first appearance) or from `[data] labels`.

use serde_json::Value;

use super::record::Ctx;
use crate::data::error::DataError;
use crate::data::prompt::classification_prompt;
use crate::data::{Item, MAX_CHOICES};

use std::path::Path;

use super::record::Rec;

struct ClassRow {
    ctx: Ctx,
    id: String,
    text: String,
    label: String,
}

fn class_rows(records: Vec<Rec>) -> Result<Vec<ClassRow>, DataError> {
    records
        .into_iter()
        .map(|Rec { ctx, obj }| {
            let text = ctx.req_str(&obj, "text", "give the text to classify")?;
            let label = match obj.get("label") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                None | Some(Value::Null) | Some(Value::String(_)) => return Err(ctx.missing("label", "give the class label as a string")),
                Some(other) => return Err(ctx.wrong("label", "a string", other)),
            };
            let id = ctx.id(&obj, &["id"])?;
            Ok(ClassRow { ctx, id, text, label })
        })
        .collect()
}

/// Distinct labels in order of first appearance.
pub(crate) fn label_set(records: Vec<Rec>) -> Result<Vec<String>, DataError> {
    let mut labels: Vec<String> = Vec::new();
    for r in class_rows(records)? {
        if !labels.contains(&r.label) {
            labels.push(r.label);
        }
    }
    Ok(labels)
}

/// Classification records: `{"text", "label", "id"?}`. `labels` fixes the label set and its
/// order; without it the file's labels are used in order of first appearance.
pub(crate) fn load(path: &Path, records: Vec<Rec>, labels: Option<&[String]>) -> Result<Vec<Item>, DataError> {
    let table = records.first().is_some_and(|r| r.ctx.at.noun() == "column");
    let rows = class_rows(records)?;
    let label_set: Vec<String> = match labels {
        Some(l) => l.iter().map(|s| s.trim().to_string()).collect(),
        None => {
            let mut ls: Vec<String> = Vec::new();
            for r in &rows {
                if !ls.contains(&r.label) {
                    ls.push(r.label.clone());
                }
            }
            ls
        }
    };
    if label_set.len() < 2 || label_set.len() > MAX_CHOICES {
        return Err(DataError::BadLabelSet { file: path.to_path_buf(), field: "label".into(), table, n: label_set.len(), labels: label_set, max: MAX_CHOICES });
    }
    let answer_labels: Vec<String> = label_set.iter().map(|l| format!(" {l}")).collect();
    rows.into_iter()
        .map(|r| {
            let label = label_set.iter().position(|l| *l == r.label).ok_or_else(|| DataError::UnknownClassLabel {
                at: r.ctx.at.clone(),
                field: "label".into(),
                label: r.label.clone(),
                labels: label_set.clone(),
            })?;
            Ok(Item { id: r.id, prompt: classification_prompt(&r.text, &label_set), choices: label_set.clone(), answer_labels: answer_labels.clone(), label })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::data::formats::test_util::*;
    use crate::data::formats::{classification_labels, detect_format, load_items, load_items_with_labels};
    use crate::data::Format;

    #[test]
    fn classification_labels_from_file_or_given() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "sst.jsonl",
            br#"{"text": "A joy to watch.", "label": "positive"}
{"text": "Dull.", "label": "negative"}
{"text": "Fine.", "label": "positive", "id": "s3"}
"#,
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Classification);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!(items[0].prompt, "Classify the text. Options: positive, negative.\nText: A joy to watch.\nAnswer:");
        assert_eq!(items[0].choices, vec!["positive", "negative"]);
        assert_eq!(items[0].answer_labels, vec![" positive", " negative"]);
        assert_eq!(items.iter().map(|i| i.label).collect::<Vec<_>>(), vec![0, 1, 0]);
        assert_eq!(items[2].id, "s3");
        assert_eq!(classification_labels(&p).unwrap(), vec!["positive", "negative"]);

        let given = vec!["negative".to_string(), "neutral".to_string(), "positive".to_string()];
        let items = load_items_with_labels(&p, Format::Classification, Some(&given)).unwrap();
        assert_eq!(items.iter().map(|i| i.label).collect::<Vec<_>>(), vec![2, 0, 2]);
        assert_eq!(items[0].answer_labels, vec![" negative", " neutral", " positive"]);

        let given = vec!["negative".to_string(), "neutral".to_string()];
        let m = load_items_with_labels(&p, Format::Classification, Some(&given)).unwrap_err().to_string();
        assert!(m.contains("sst.jsonl:1:") && m.contains("`label`") && m.contains("\"positive\""), "{m}");

        let p = write(&d, "one.jsonl", br#"{"text": "x", "label": "a"}"#);
        let m = err(&p, Format::Classification);
        assert!(m.contains("one.jsonl") && m.contains("1 distinct label"), "{m}");

        let p = write(&d, "nolabel.jsonl", b"{\"text\": \"x\", \"label\": \"a\"}\n{\"text\": \"y\"}\n");
        assert_located(&err(&p, Format::Classification), "nolabel.jsonl", 2, "label");
    }
}
