//! WinoGrande records.

use serde_json::{Map, Value};

use super::record::{mcq_item, Ctx};
use crate::data::error::DataError;
use crate::data::Item;

/// WinoGrande: `{"qID", "sentence" (with "_"), "option1", "option2", "answer": "1"|"2"}`.
pub(crate) fn parse_winogrande(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Item, DataError> {
    let sentence = ctx.req_str(obj, "sentence", "give the sentence with a blank `_`")?;
    if !sentence.contains('_') {
        return Err(ctx.invalid("sentence", "the sentence has no blank `_` to fill; mark the blank with `_`"));
    }
    let o1 = ctx.req_str(obj, "option1", "give the first option")?;
    let o2 = ctx.req_str(obj, "option2", "give the second option")?;
    let label = match obj.get("answer") {
        Some(Value::String(s)) if s.trim() == "1" => 0,
        Some(Value::String(s)) if s.trim() == "2" => 1,
        Some(Value::Number(n)) if n.as_i64() == Some(1) => 0,
        Some(Value::Number(n)) if n.as_i64() == Some(2) => 1,
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(ctx.missing("answer", "the item is unlabelled (WinoGrande's test split has no answers); use a labelled split"))
        }
        None | Some(Value::Null) => return Err(ctx.missing("answer", "give \"1\" or \"2\"")),
        Some(Value::Number(n)) => return Err(ctx.invalid("answer", format!("{n} is not an option number; give \"1\" (option1) or \"2\" (option2)"))),
        Some(Value::String(s)) => return Err(ctx.invalid("answer", format!("{s:?} is not an option number; give \"1\" (option1) or \"2\" (option2)"))),
        Some(other) => return Err(ctx.wrong("answer", "\"1\" or \"2\"", other)),
    };
    let id = ctx.id(obj, &["qID", "id"])?;
    Ok(mcq_item(id, None, &sentence, vec![o1, o2], label))
}

#[cfg(test)]
mod tests {
    use crate::data::formats::test_util::*;
    use crate::data::formats::{detect_format, load_items};
    use crate::data::Format;

    #[test]
    fn winogrande_publisher_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "train_xs.jsonl",
            br#"{"qID": "WG_0001-2", "sentence": "Nora lent Paul her umbrella because _ had forgotten his own at home.", "option1": "Nora", "option2": "Paul", "answer": "2"}
{"qID": "w2", "sentence": "The box did not fit in the car because the _ was too small.", "option1": "box", "option2": "car", "answer": 2}
{"qID": "w3", "sentence": "A _ B", "option1": "x", "option2": "y", "answer": "1"}
"#,
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Winogrande);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!(items[0].id, "WG_0001-2");
        assert_eq!(
            items[1].prompt,
            "Select one of the choices that answers the following question: The box did not fit in the car because the _ was too small.\nChoices:\nA. box\nB. car\nAnswer:"
        );
        assert_eq!(items[1].answer_labels, vec![" A", " B"]);
        assert_eq!(items.iter().map(|i| i.label).collect::<Vec<_>>(), vec![1, 1, 0]);

        let p = write(&d, "test.jsonl", br#"{"qID": "t", "sentence": "A _ B", "option1": "x", "option2": "y", "answer": ""}"#);
        let m = err(&p, Format::Winogrande);
        assert_located(&m, "test.jsonl", 1, "answer");
        assert!(m.contains("unlabelled"), "{m}");
        let p = write(&d, "three.jsonl", br#"{"qID": "t", "sentence": "A _ B", "option1": "x", "option2": "y", "answer": "3"}"#);
        assert_located(&err(&p, Format::Winogrande), "three.jsonl", 1, "answer");
        let p = write(&d, "noblank.jsonl", br#"{"qID": "t", "sentence": "A B", "option1": "x", "option2": "y", "answer": "1"}"#);
        assert_located(&err(&p, Format::Winogrande), "noblank.jsonl", 1, "sentence");
    }
}
