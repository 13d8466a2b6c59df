//! Dataset parsers: generic MCQ JSONL, CSV, classification JSONL, and the publishers' ARC /
//! OpenBookQA, BoolQ and WinoGrande JSONL. Each parser turns a file into `Item`s or returns a
//! `DataError` naming the file, the 1-based line and the field.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::DataError;
use super::prompt::{boolq_prompt, classification_prompt, letter_labels, mcq_prompt, LETTERS};
use super::{Format, Item, MAX_CHOICES};

// ---------------------------------------------------------------------------------------------
// Reading lines

/// Reads a text file, returning its non-blank lines with their 1-based line numbers.
/// Checks UTF-8 line by line (so the error names the line), strips a leading BOM and `\r`.
pub(crate) fn read_lines(path: &Path) -> Result<Vec<(usize, String)>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { file: path.to_path_buf(), error: source })?;
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let mut raw = raw;
        if i == 0 && raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
            raw = &raw[3..];
        }
        let s = std::str::from_utf8(raw).map_err(|_| DataError::InvalidUtf8 { file: path.to_path_buf(), line: line_no })?;
        let s = s.strip_suffix('\r').unwrap_or(s);
        if !s.trim().is_empty() {
            out.push((line_no, s.to_string()));
        }
    }
    if out.is_empty() {
        return Err(DataError::EmptyFile { file: path.to_path_buf() });
    }
    Ok(out)
}

/// The file's name for default ids (`train.jsonl:17`).
fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn default_id(path: &Path, line: usize) -> String {
    format!("{}:{}", file_name(path), line)
}

// ---------------------------------------------------------------------------------------------
// Field access with located errors

/// Where a record came from: file and 1-based line.
struct Ctx<'a> {
    file: &'a Path,
    line: usize,
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            format!("the string {short:?}")
        }
        Value::Array(a) => format!("a list of {} element(s)", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

impl<'a> Ctx<'a> {
    fn file(&self) -> PathBuf {
        self.file.to_path_buf()
    }

    fn missing(&self, field: &str, hint: &str) -> DataError {
        DataError::MissingField { file: self.file(), line: self.line, field: field.to_string(), hint: hint.to_string() }
    }

    fn wrong(&self, field: &str, expected: &str, found: &Value) -> DataError {
        DataError::WrongType { file: self.file(), line: self.line, field: field.to_string(), expected: expected.to_string(), found: describe(found) }
    }

    fn invalid(&self, field: &str, message: impl Into<String>) -> DataError {
        DataError::InvalidValue { file: self.file(), line: self.line, field: field.to_string(), message: message.into() }
    }

    fn parse_object(&self, text: &str) -> Result<Map<String, Value>, DataError> {
        let v: Value = serde_json::from_str(text).map_err(|e| DataError::Json { file: self.file(), line: self.line, message: e.to_string() })?;
        match v {
            Value::Object(m) => Ok(m),
            other => Err(self.wrong("<record>", "a JSON object", &other)),
        }
    }

    /// A required string field (present, not null).
    fn req_str(&self, obj: &Map<String, Value>, field: &str, hint: &str) -> Result<String, DataError> {
        self.req_str_named(obj.get(field), field, hint)
    }

    fn req_str_named(&self, v: Option<&Value>, field: &str, hint: &str) -> Result<String, DataError> {
        match v {
            None | Some(Value::Null) => Err(self.missing(field, hint)),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.wrong(field, "a string", other)),
        }
    }

    /// An optional string field; numbers are accepted and printed (ids are often numbers).
    fn opt_str_or_num(&self, obj: &Map<String, Value>, field: &str) -> Result<Option<String>, DataError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.wrong(field, "a string or a number", other)),
        }
    }

    fn id(&self, obj: &Map<String, Value>, fields: &[&str]) -> Result<String, DataError> {
        for f in fields {
            if let Some(id) = self.opt_str_or_num(obj, f)? {
                return Ok(id);
            }
        }
        Ok(default_id(self.file, self.line))
    }

    /// Checks 2 <= n <= MAX_CHOICES.
    fn check_choice_count(&self, field: &str, n: usize) -> Result<(), DataError> {
        if n > MAX_CHOICES {
            return Err(DataError::TooManyChoices { file: self.file(), line: self.line, field: field.to_string(), n, max: MAX_CHOICES });
        }
        if n < 2 {
            return Err(DataError::TooFewChoices { file: self.file(), line: self.line, field: field.to_string(), n });
        }
        Ok(())
    }

    fn index_in_range(&self, field: &str, index: i64, n: usize) -> Result<usize, DataError> {
        if index < 0 || index as u64 >= n as u64 {
            Err(DataError::AnswerOutOfRange { file: self.file(), line: self.line, field: field.to_string(), index, n })
        } else {
            Ok(index as usize)
        }
    }

    /// Generic answer: a 0-based index (number or digit string) or a letter "A".."H".
    fn parse_answer(&self, field: &str, v: Option<&Value>, n: usize) -> Result<usize, DataError> {
        const EXPECTED: &str = "a 0-based choice index or a letter A..H";
        match v {
            None | Some(Value::Null) => Err(self.missing(field, "give the correct choice as a 0-based index or a letter A..H")),
            Some(Value::Number(num)) => match num.as_i64() {
                Some(i) => self.index_in_range(field, i, n),
                None => Err(self.wrong(field, EXPECTED, v.unwrap())),
            },
            Some(Value::String(s)) => {
                let t = s.trim();
                if t.is_empty() {
                    return Err(self.missing(field, "give the correct choice as a 0-based index or a letter A..H"));
                }
                if t.chars().all(|c| c.is_ascii_digit()) {
                    return match t.parse::<i64>() {
                        Ok(i) => self.index_in_range(field, i, n),
                        Err(_) => Err(self.wrong(field, EXPECTED, v.unwrap())),
                    };
                }
                let up = t.to_ascii_uppercase();
                if let Some(pos) = LETTERS.iter().position(|l| *l == up) {
                    if pos < n {
                        return Ok(pos);
                    }
                    return Err(DataError::UnknownAnswerLabel {
                        file: self.file(),
                        line: self.line,
                        field: field.to_string(),
                        letter: t.to_string(),
                        labels: LETTERS.iter().take(n).map(|s| s.to_string()).collect(),
                    });
                }
                Err(self.wrong(field, EXPECTED, v.unwrap()))
            }
            Some(other) => Err(self.wrong(field, EXPECTED, other)),
        }
    }

    /// A list of choice texts (strings; numbers are printed).
    fn choice_list(&self, field: &str, v: Option<&Value>) -> Result<Vec<String>, DataError> {
        let arr = match v {
            None | Some(Value::Null) => return Err(self.missing(field, "give the choices as a list of strings")),
            Some(Value::Array(a)) => a,
            Some(other) => return Err(self.wrong(field, "a list of strings", other)),
        };
        let mut out = Vec::with_capacity(arr.len());
        for (i, c) in arr.iter().enumerate() {
            match c {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                other => return Err(self.wrong(&format!("{field}[{i}]"), "a string", other)),
            }
        }
        self.check_choice_count(field, out.len())?;
        Ok(out)
    }
}

fn opt_context(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Option<String>, DataError> {
    match obj.get("context") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ctx.wrong("context", "a string", other)),
    }
}

fn mcq_item(id: String, context: Option<&str>, question: &str, choices: Vec<String>, label: usize) -> Item {
    Item { id, prompt: mcq_prompt(context, question, &choices), answer_labels: letter_labels(choices.len()), choices, label }
}

// ---------------------------------------------------------------------------------------------
// Format detection

/// The first non-blank line of a file, with its number (reads only as far as needed).
fn first_record(path: &Path) -> Result<(usize, String), DataError> {
    let f = std::fs::File::open(path).map_err(|source| DataError::Io { file: path.to_path_buf(), error: source })?;
    let mut r = BufReader::new(f);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|source| DataError::Io { file: path.to_path_buf(), error: source })?;
        if n == 0 {
            return Err(DataError::EmptyFile { file: path.to_path_buf() });
        }
        line_no += 1;
        let mut raw: &[u8] = &buf;
        if line_no == 1 && raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
            raw = &raw[3..];
        }
        let s = std::str::from_utf8(raw).map_err(|_| DataError::InvalidUtf8 { file: path.to_path_buf(), line: line_no })?;
        if !s.trim().is_empty() {
            return Ok((line_no, s.trim().to_string()));
        }
    }
}

/// Detects the format from the extension (`.csv`) and the first record's keys.
pub fn detect_format(path: &Path) -> Result<Format, DataError> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if ext == "csv" {
        return Ok(Format::Csv);
    }
    let (line, text) = first_record(path)?;
    let ctx = Ctx { file: path, line };
    let obj = ctx.parse_object(&text)?;
    let has = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
    let q = obj.get("question");
    // ARC / OpenBookQA as published: question.stem + question.choices; or the Hugging Face
    // layouts: question_stem (OpenBookQA) or question string + choices {text: [...], label: [...]}.
    let is_arc = q.is_some_and(|v| v.is_object())
        || (has("question_stem") && has("choices"))
        || (q.is_some_and(|v| v.is_string()) && obj.get("choices").is_some_and(|v| v.is_object()));
    let fmt = if is_arc {
        Some(Format::Arc)
    } else if has("passage") && has("question") {
        Some(Format::Boolq)
    } else if has("sentence") && has("option1") {
        Some(Format::Winogrande)
    } else if has("text") && has("label") {
        Some(Format::Classification)
    } else if has("question") && has("choices") {
        Some(Format::Mcq)
    } else {
        None
    };
    fmt.ok_or_else(|| {
        let mut keys: Vec<String> = obj.keys().cloned().collect();
        keys.sort();
        DataError::UnknownFormat { file: path.to_path_buf(), line, keys }
    })
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Loads a dataset file. `Format::Auto` detects the format first.
pub fn load_items(path: &Path, format: Format) -> Result<Vec<Item>, DataError> {
    load_items_with_labels(path, format, None)
}

/// As `load_items`; for `classification`, `labels` fixes the label set and its order (so that the
/// train, validation and test files agree). Other formats ignore `labels`.
pub fn load_items_with_labels(path: &Path, format: Format, labels: Option<&[String]>) -> Result<Vec<Item>, DataError> {
    let format = match format {
        Format::Auto => detect_format(path)?,
        f => f,
    };
    match format {
        Format::Auto => unreachable!("detect_format never returns Auto"),
        Format::Csv => load_csv(path),
        Format::Classification => load_classification(path, labels),
        f => {
            let lines = read_lines(path)?;
            let mut items = Vec::with_capacity(lines.len());
            for (line, text) in lines {
                let ctx = Ctx { file: path, line };
                let obj = ctx.parse_object(&text)?;
                let item = match f {
                    Format::Mcq => parse_mcq(&ctx, &obj)?,
                    Format::Arc => parse_arc(&ctx, &obj)?,
                    Format::Boolq => parse_boolq(&ctx, &obj)?,
                    Format::Winogrande => parse_winogrande(&ctx, &obj)?,
                    _ => unreachable!(),
                };
                items.push(item);
            }
            Ok(items)
        }
    }
}

/// The label set of a classification file: distinct labels in order of first appearance.
pub fn classification_labels(path: &Path) -> Result<Vec<String>, DataError> {
    let rows = read_classification_rows(path)?;
    let mut labels: Vec<String> = Vec::new();
    for r in &rows {
        if !labels.contains(&r.label) {
            labels.push(r.label.clone());
        }
    }
    Ok(labels)
}

fn parse_mcq(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Item, DataError> {
    let question = ctx.req_str(obj, "question", "give the question text")?;
    let choices = ctx.choice_list("choices", obj.get("choices"))?;
    let label = ctx.parse_answer("answer", obj.get("answer"), choices.len())?;
    let context = opt_context(ctx, obj)?;
    let id = ctx.id(obj, &["id"])?;
    Ok(mcq_item(id, context.as_deref(), &question, choices, label))
}

/// ARC / OpenBookQA. Publisher layout:
/// `{"id", "question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}`;
/// Hugging Face layout: `{"id", "question" | "question_stem", "choices": {"text": [...], "label": [...]}, "answerKey"}`.
/// The answer key is matched against the item's own labels ("A".."E" or "1".."5"); choices are
/// shown lettered A, B, C, ... by position. OpenBookQA's `fact1` and other keys are ignored.
fn parse_arc(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Item, DataError> {
    let (stem, texts, labels, choices_field) = match obj.get("question") {
        Some(Value::Object(q)) => {
            let stem = ctx.req_str_named(q.get("stem"), "question.stem", "give the question text in question.stem")?;
            let arr = match q.get("choices") {
                None | Some(Value::Null) => return Err(ctx.missing("question.choices", "give the choices as a list of {\"text\", \"label\"} objects")),
                Some(Value::Array(a)) => a,
                Some(other) => return Err(ctx.wrong("question.choices", "a list of {\"text\", \"label\"} objects", other)),
            };
            let mut texts = Vec::new();
            let mut labels = Vec::new();
            for (i, c) in arr.iter().enumerate() {
                let field = format!("question.choices[{i}]");
                let c = match c {
                    Value::Object(m) => m,
                    other => return Err(ctx.wrong(&field, "an object {\"text\", \"label\"}", other)),
                };
                texts.push(ctx.req_str_named(c.get("text"), &format!("{field}.text"), "give the choice text")?);
                let label = match c.get("label") {
                    Some(Value::String(s)) => s.trim().to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    None | Some(Value::Null) => return Err(ctx.missing(&format!("{field}.label"), "give the choice label (\"A\" or \"1\")")),
                    Some(other) => return Err(ctx.wrong(&format!("{field}.label"), "a string", other)),
                };
                labels.push(label);
            }
            (stem, texts, labels, "question.choices")
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            let stem = match (obj.get("question"), obj.get("question_stem")) {
                (Some(Value::String(s)), _) => s.clone(),
                (_, Some(Value::String(s))) => s.clone(),
                (_, Some(other)) if !other.is_null() => return Err(ctx.wrong("question_stem", "a string", other)),
                _ => return Err(ctx.missing("question", "give the question as {\"stem\", \"choices\"} (ARC/OpenBookQA JSONL)")),
            };
            let ch = match obj.get("choices") {
                Some(Value::Object(m)) => m,
                None | Some(Value::Null) => return Err(ctx.missing("choices", "give choices as {\"text\": [...], \"label\": [...]}")),
                Some(other) => return Err(ctx.wrong("choices", "an object {\"text\": [...], \"label\": [...]}", other)),
            };
            let texts = ctx.choice_list_unchecked("choices.text", ch.get("text"))?;
            let labels = ctx.choice_list_unchecked("choices.label", ch.get("label"))?;
            if labels.len() != texts.len() {
                return Err(ctx.invalid("choices.label", format!("{} labels for {} choice texts; give one label per choice", labels.len(), texts.len())));
            }
            (stem, texts, labels, "choices")
        }
        Some(other) => return Err(ctx.wrong("question", "an object {\"stem\", \"choices\"} or a string", other)),
    };
    ctx.check_choice_count(choices_field, texts.len())?;
    let key = match obj.get("answerKey") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) | Some(Value::String(_)) => return Err(ctx.missing("answerKey", "give the label of the correct choice (e.g. \"A\" or \"1\")")),
        Some(other) => return Err(ctx.wrong("answerKey", "a string", other)),
    };
    let label = labels.iter().position(|l| l.eq_ignore_ascii_case(&key)).ok_or_else(|| DataError::UnknownAnswerLabel {
        file: ctx.file(),
        line: ctx.line,
        field: "answerKey".into(),
        letter: key.clone(),
        labels: labels.clone(),
    })?;
    let id = ctx.id(obj, &["id"])?;
    Ok(mcq_item(id, None, &stem, texts, label))
}

impl<'a> Ctx<'a> {
    /// A list of strings without the choice-count check.
    fn choice_list_unchecked(&self, field: &str, v: Option<&Value>) -> Result<Vec<String>, DataError> {
        let arr = match v {
            None | Some(Value::Null) => return Err(self.missing(field, "give a list of strings")),
            Some(Value::Array(a)) => a,
            Some(other) => return Err(self.wrong(field, "a list of strings", other)),
        };
        arr.iter()
            .enumerate()
            .map(|(i, c)| match c {
                Value::String(s) => Ok(s.trim().to_string()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(self.wrong(&format!("{field}[{i}]"), "a string", other)),
            })
            .collect()
    }
}

/// BoolQ: `{"question", "passage", "answer": true|false, "title"?}`. Choices True/False
/// (label 0 = True). The SuperGLUE layout `"label": 1|0` (1 = True) is accepted too.
fn parse_boolq(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Item, DataError> {
    let question = ctx.req_str(obj, "question", "give the yes/no question")?;
    let passage = ctx.req_str(obj, "passage", "give the passage the question is about")?;
    let answer = match (obj.get("answer"), obj.get("label")) {
        (Some(Value::Bool(b)), _) => *b,
        (Some(Value::String(s)), _) if s.trim().eq_ignore_ascii_case("true") => true,
        (Some(Value::String(s)), _) if s.trim().eq_ignore_ascii_case("false") => false,
        (Some(other), _) if !other.is_null() => return Err(ctx.wrong("answer", "true or false", other)),
        (_, Some(Value::Bool(b))) => *b,
        (_, Some(Value::Number(n))) if n.as_i64() == Some(1) => true,
        (_, Some(Value::Number(n))) if n.as_i64() == Some(0) => false,
        (_, Some(other)) if !other.is_null() => return Err(ctx.wrong("label", "1 (true) or 0 (false)", other)),
        _ => return Err(ctx.missing("answer", "give the answer as true or false")),
    };
    let id = ctx.id(obj, &["id", "idx"])?;
    Ok(Item {
        id,
        prompt: boolq_prompt(&passage, &question),
        choices: vec!["True".into(), "False".into()],
        answer_labels: vec![" True".into(), " False".into()],
        label: if answer { 0 } else { 1 },
    })
}

/// WinoGrande: `{"qID", "sentence" (with "_"), "option1", "option2", "answer": "1"|"2"}`.
fn parse_winogrande(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Item, DataError> {
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

struct ClassRow {
    line: usize,
    id: String,
    text: String,
    label: String,
}

fn read_classification_rows(path: &Path) -> Result<Vec<ClassRow>, DataError> {
    let lines = read_lines(path)?;
    let mut rows = Vec::with_capacity(lines.len());
    for (line, text) in lines {
        let ctx = Ctx { file: path, line };
        let obj = ctx.parse_object(&text)?;
        let t = ctx.req_str(&obj, "text", "give the text to classify")?;
        let label = match obj.get("label") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            None | Some(Value::Null) | Some(Value::String(_)) => return Err(ctx.missing("label", "give the class label as a string")),
            Some(other) => return Err(ctx.wrong("label", "a string", other)),
        };
        let id = ctx.id(&obj, &["id"])?;
        rows.push(ClassRow { line, id, text: t, label });
    }
    Ok(rows)
}

/// Classification JSONL: `{"text", "label", "id"?}`.
fn load_classification(path: &Path, labels: Option<&[String]>) -> Result<Vec<Item>, DataError> {
    let rows = read_classification_rows(path)?;
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
        return Err(DataError::BadLabelSet { file: path.to_path_buf(), n: label_set.len(), labels: label_set, max: MAX_CHOICES });
    }
    let answer_labels: Vec<String> = label_set.iter().map(|l| format!(" {l}")).collect();
    rows.into_iter()
        .map(|r| {
            let label = label_set.iter().position(|l| *l == r.label).ok_or_else(|| DataError::UnknownClassLabel {
                file: path.to_path_buf(),
                line: r.line,
                label: r.label.clone(),
                labels: label_set.clone(),
            })?;
            Ok(Item { id: r.id, prompt: classification_prompt(&r.text, &label_set), choices: label_set.clone(), answer_labels: answer_labels.clone(), label })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// CSV

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
fn load_csv(path: &Path) -> Result<Vec<Item>, DataError> {
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
    let headers: Vec<String> = rdr.headers().map_err(csv_err)?.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
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
        let ctx = Ctx { file: path, line };
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
        let id = id_col.map(cell).filter(|s| !s.trim().is_empty()).unwrap_or_else(|| default_id(path, line));
        items.push(mcq_item(id, context.as_deref(), &question, choices, label));
    }
    if items.is_empty() {
        return Err(DataError::EmptyFile { file: path.to_path_buf() });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes `content` to `dir/name` and returns the path.
    fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().write_all(content).unwrap();
        p
    }

    fn err(path: &Path, format: Format) -> String {
        match load_items(path, format) {
            Ok(items) => panic!("expected an error, got {} items", items.len()),
            Err(e) => e.to_string(),
        }
    }

    /// The message names the file, the line and the field.
    fn assert_located(msg: &str, file: &str, line: usize, field: &str) {
        assert!(msg.contains(&format!("{file}:{line}:")), "no {file}:{line} in: {msg}");
        assert!(msg.contains(&format!("`{field}`")), "no field `{field}` in: {msg}");
    }

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

    #[test]
    fn arc_publisher_and_hf_layouts() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "ARC-Challenge-Dev.jsonl",
            br#"{"id": "ARC_0001", "question": {"stem": "A kettle of water is heated on a stove. What happens to the water?", "choices": [{"text": "It freezes.", "label": "A"}, {"text": "It turns to sand.", "label": "B"}, {"text": "It gets warmer.", "label": "C"}, {"text": "It becomes heavier.", "label": "D"}]}, "answerKey": "C"}
{"id": "num1", "question": {"stem": "Numbered?", "choices": [{"text": "one", "label": "1"}, {"text": "two", "label": "2"}, {"text": "three", "label": "3"}]}, "answerKey": "2"}
{"id": "OBQA_17", "question": {"stem": "A seed needs", "choices": [{"text": "a radio", "label": "A"}, {"text": "water and light", "label": "D"}]}, "fact1": "plants need water to grow", "humanScore": 1.0, "answerKey": "D"}
"#,
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Arc);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!(items[0].id, "ARC_0001");
        assert_eq!(items[0].label, 2);
        assert_eq!(
            items[0].prompt,
            "Select one of the choices that answers the following question: A kettle of water is heated on a stove. What happens to the water?\nChoices:\nA. It freezes.\nB. It turns to sand.\nC. It gets warmer.\nD. It becomes heavier.\nAnswer:"
        );
        assert_eq!(items[1].label, 1);
        assert_eq!(items[1].answer_labels, vec![" A", " B", " C"]);
        assert!(items[1].prompt.contains("\nA. one\nB. two\nC. three\n"));
        assert_eq!(items[2].label, 1); // OpenBookQA-style, answer key matched by label "D" at position 1
        assert_eq!(items[2].choices.len(), 2);

        let p = write(
            &d,
            "arc_hf.jsonl",
            br#"{"id": "x1", "question": "Which is a gas?", "choices": {"text": ["ice", "steam", "iron"], "label": ["A", "B", "C"]}, "answerKey": "B"}
{"id": "x2", "question_stem": "Obqa hf?", "choices": {"text": ["p", "q"], "label": ["A", "B"]}, "answerKey": "A"}
"#,
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Arc);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!((items[0].label, items[1].label), (1, 0));
        assert!(items[1].prompt.contains("question: Obqa hf?\n"));

        let p = write(
            &d,
            "arc_bad.jsonl",
            br#"{"id": "a", "question": {"stem": "S", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]}, "answerKey": "E"}"#,
        );
        let m = err(&p, Format::Arc);
        assert_located(&m, "arc_bad.jsonl", 1, "answerKey");
        assert!(m.contains("[\"A\", \"B\"]"), "{m}");

        let p = write(
            &d,
            "arc_bad2.jsonl",
            br#"{"id": "a", "question": {"stem": "S", "choices": [{"label": "A"}, {"text": "y", "label": "B"}]}, "answerKey": "A"}"#,
        );
        assert_located(&err(&p, Format::Arc), "arc_bad2.jsonl", 1, "question.choices[0].text");
    }

    #[test]
    fn boolq_publisher_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "dev.jsonl",
            br#"{"question": "is the shed painted green", "title": "Shed", "answer": false, "passage": "The old shed behind the house was painted red last spring."}
{"question": "is it legal", "passage": "It is legal.", "answer": true, "id": "b2"}
{"question": "superglue layout", "passage": "P.", "label": 1, "idx": 7}
"#,
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Boolq);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!(
            items[0].prompt,
            "Answer the question with only True or False: is the shed painted green\nContext: The old shed behind the house was painted red last spring.\nAnswer:"
        );
        assert_eq!(items[0].choices, vec!["True", "False"]);
        assert_eq!(items[0].answer_labels, vec![" True", " False"]);
        assert_eq!(items[0].label, 1);
        assert_eq!(items[0].id, "dev.jsonl:1");
        assert_eq!((items[1].label, items[1].id.as_str()), (0, "b2"));
        assert_eq!((items[2].label, items[2].id.as_str()), (0, "7"));

        let p = write(&d, "bq.jsonl", br#"{"question": "q", "passage": "p", "answer": "maybe"}"#);
        let m = err(&p, Format::Boolq);
        assert_located(&m, "bq.jsonl", 1, "answer");
        assert!(m.contains("true or false"), "{m}");
        let p = write(&d, "bq2.jsonl", br#"{"question": "q", "answer": true}"#);
        assert_located(&err(&p, Format::Boolq), "bq2.jsonl", 1, "passage");
    }

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

    #[test]
    fn unknown_format_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, "odd.jsonl", br#"{"foo": 1, "bar": 2}"#);
        let m = detect_format(&p).unwrap_err().to_string();
        assert!(m.contains("odd.jsonl:1:") && m.contains("[\"bar\", \"foo\"]"), "{m}");
        assert_eq!("Winogrande".parse::<Format>().unwrap(), Format::Winogrande);
        assert_eq!("openbookqa".parse::<Format>().unwrap(), Format::Arc);
        assert!("xml".parse::<Format>().unwrap_err().to_string().contains("\"xml\""));
        assert_eq!(serde_json::to_string(&Format::Classification).unwrap(), "\"classification\"");
        assert_eq!(serde_json::from_str::<Format>("\"boolq\"").unwrap(), Format::Boolq);
    }
}
