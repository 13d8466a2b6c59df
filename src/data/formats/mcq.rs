//! Generic multiple-choice records: `question`, `choices` (list), `answer` (index or letter),
//! optional `context`, `id`. MMLU's Hugging Face columns (`question`, `choices`, integer
//! `answer`, `subject`) are this layout too.

use serde_json::{Map, Value};

use super::record::{mcq_item, Ctx};

use crate::data::error::DataError;
use crate::data::Item;

pub(crate) fn opt_context(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Option<String>, DataError> {
    match obj.get("context") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ctx.wrong("context", "a string", other)),
    }
}

pub(crate) fn parse_mcq(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Item, DataError> {
    let question = ctx.req_str(obj, "question", "give the question text")?;
    let choices = ctx.choice_list("choices", obj.get("choices"))?;
    let label = ctx.parse_answer("answer", obj.get("answer"), choices.len())?;
    let context = opt_context(ctx, obj)?;
    let id = ctx.id(obj, &["id"])?;
    Ok(mcq_item(id, context.as_deref(), &question, choices, label))
}

#[cfg(test)]
mod tests {
    use crate::data::formats::test_util::*;
    use crate::data::formats::{detect_format, load_items};
    use crate::data::Format;

    #[test]
    fn mcq_jsonl_parses_index_letter_context_and_ids() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "train.jsonl",
            br#"{"id": "q1", "question": "Which is largest?", "choices": ["3", "17", "9", "12"], "answer": 1}

{"question": "Pick the fruit.", "choices": ["stone", "apple"], "answer": "B", "context": "Fruit grows on trees."}
{"id": 42, "question": "Third?", "choices": [1, 2, 3], "answer": "c"}
{"question": "Digit string", "choices": ["x", "y"], "answer": "0"}
"#,
        );
        let items = load_items(&p, Format::Mcq).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].id, "q1");
        assert_eq!(
            items[0].prompt,
            "Select one of the choices that answers the following question: Which is largest?\nChoices:\nA. 3\nB. 17\nC. 9\nD. 12\nAnswer:"
        );
        assert_eq!(items[0].choices, vec!["3", "17", "9", "12"]);
        assert_eq!(items[0].answer_labels, vec![" A", " B", " C", " D"]);
        assert_eq!(items[0].label, 1);
        // blank line 2 is skipped, the second item is on line 3 and has no id
        assert_eq!(items[1].id, "train.jsonl:3");
        assert_eq!(items[1].label, 1);
        assert_eq!(
            items[1].prompt,
            "Fruit grows on trees.\nSelect one of the choices that answers the following question: Pick the fruit.\nChoices:\nA. stone\nB. apple\nAnswer:"
        );
        assert_eq!(items[1].answer_labels, vec![" A", " B"]);
        assert_eq!(items[2].id, "42");
        assert_eq!(items[2].label, 2);
        assert_eq!(items[2].choices, vec!["1", "2", "3"]);
        assert_eq!(items[3].label, 0);
        // auto detects mcq
        assert_eq!(detect_format(&p).unwrap(), Format::Mcq);
        assert_eq!(load_items(&p, Format::Auto).unwrap(), items);
    }

    #[test]
    fn mcq_errors_name_file_line_field() {
        let d = tempfile::tempdir().unwrap();
        let ok = r#"{"question": "Q", "choices": ["a", "b", "c"], "answer": 0}"#;

        let p = write(&d, "bad.jsonl", format!("{ok}\n{{\"question\": \"Q\", \"choices\": [\"a\"\n").as_bytes());
        let m = err(&p, Format::Mcq);
        assert!(m.contains("bad.jsonl:2:") && m.contains("malformed JSON"), "{m}");

        let p = write(&d, "missing.jsonl", format!("{ok}\n\n{{\"choices\": [\"a\", \"b\"], \"answer\": 0}}\n").as_bytes());
        let m = err(&p, Format::Mcq);
        assert_located(&m, "missing.jsonl", 3, "question");
        assert!(m.contains("missing field"), "{m}");

        let p = write(&d, "type.jsonl", br#"{"question": "Q", "choices": "a, b", "answer": 0}"#);
        let m = err(&p, Format::Mcq);
        assert_located(&m, "type.jsonl", 1, "choices");
        assert!(m.contains("a list of strings") && m.contains("the string \"a, b\""), "{m}");

        let p = write(&d, "elem.jsonl", br#"{"question": "Q", "choices": ["a", null], "answer": 0}"#);
        assert_located(&err(&p, Format::Mcq), "elem.jsonl", 1, "choices[1]");

        let p = write(&d, "range.jsonl", format!("{ok}\n{{\"question\": \"Q\", \"choices\": [\"a\", \"b\", \"c\"], \"answer\": 3}}").as_bytes());
        let m = err(&p, Format::Mcq);
        assert_located(&m, "range.jsonl", 2, "answer");
        assert!(m.contains("out of range for 3 choices"), "{m}");

        let p = write(&d, "neg.jsonl", br#"{"question": "Q", "choices": ["a", "b"], "answer": -1}"#);
        assert!(err(&p, Format::Mcq).contains("out of range"));

        let p = write(&d, "letter.jsonl", br#"{"question": "Q", "choices": ["a", "b", "c"], "answer": "E"}"#);
        let m = err(&p, Format::Mcq);
        assert_located(&m, "letter.jsonl", 1, "answer");
        assert!(m.contains("\"E\" is not among the choice labels [\"A\", \"B\", \"C\"]"), "{m}");

        let p = write(&d, "word.jsonl", br#"{"question": "Q", "choices": ["a", "b"], "answer": "yes"}"#);
        let m = err(&p, Format::Mcq);
        assert_located(&m, "word.jsonl", 1, "answer");
        assert!(m.contains("0-based choice index or a letter"), "{m}");

        let p = write(&d, "many.jsonl", br#"{"question": "Q", "choices": ["1","2","3","4","5","6","7","8","9"], "answer": 0}"#);
        let m = err(&p, Format::Mcq);
        assert_located(&m, "many.jsonl", 1, "choices");
        assert!(m.contains("9 choices, more than the maximum of 8"), "{m}");

        let p = write(&d, "few.jsonl", br#"{"question": "Q", "choices": ["only"], "answer": 0}"#);
        let m = err(&p, Format::Mcq);
        assert_located(&m, "few.jsonl", 1, "choices");
        assert!(m.contains("at least 2 choices"), "{m}");

        let p = write(&d, "array.jsonl", b"[1, 2]\n");
        assert!(err(&p, Format::Mcq).contains("array.jsonl:1:"));

        let p = write(&d, "empty.jsonl", b"\n  \n\n");
        let m = err(&p, Format::Mcq);
        assert!(m.contains("empty.jsonl") && m.contains("no records"), "{m}");
        assert!(detect_format(&p).unwrap_err().to_string().contains("no records"));

        let mut bytes = format!("{ok}\n{ok}\n").into_bytes();
        bytes.extend_from_slice(b"{\"question\": \"caf\xe9\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n");
        let p = write(&d, "latin1.jsonl", &bytes);
        let m = err(&p, Format::Mcq);
        assert!(m.contains("latin1.jsonl:3:") && m.contains("UTF-8"), "{m}");

        let p = write(&d, "nofile.jsonl", b"");
        std::fs::remove_file(&p).unwrap();
        let m = err(&p, Format::Auto);
        assert!(m.contains("nofile.jsonl") && m.contains("cannot read"), "{m}");
    }

    #[test]
    fn crlf_and_bom_are_tolerated() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "win.jsonl",
            b"\xEF\xBB\xBF{\"question\": \"Q\", \"choices\": [\"a\", \"b\"], \"answer\": 1}\r\n\r\n{\"question\": \"R\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\r\n",
        );
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].id, "win.jsonl:3");
    }
}
