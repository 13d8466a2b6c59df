//! Hugging Face data files as data paths: Parquet files, Arrow IPC files and `save_to_disk`
//! folders of the paper's tasks (the first rows of the real splits, written by
//! `scripts/make_hf_fixtures.py` with the `datasets` library's own writers), read with the Arrow
//! crates and checked against the same rows as JSON lines read by the JSONL parser: an
//! independent path to the same items. And the bad files: every error names file, row, column.

use laplace_lora::data::{self, ColumnKeys, Format, Item};
use std::path::{Path, PathBuf};

fn fx(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(rel)
}

/// Items without their ids (which name the file they came from when the rows have none).
fn strip_ids(items: &[Item]) -> Vec<Item> {
    items.iter().map(|i| Item { id: String::new(), ..i.clone() }).collect()
}

const TASKS: [(&str, Format, usize); 7] = [
    ("arc-easy", Format::Arc, 4),
    ("arc-challenge", Format::Arc, 4),
    ("obqa", Format::Arc, 4),
    ("boolq", Format::Boolq, 2),
    ("winogrande", Format::Winogrande, 2),
    ("mmlu-college_physics", Format::Mcq, 4),
    ("commonsense_qa", Format::Arc, 5),
];

#[test]
fn every_task_loads_from_parquet_arrow_and_save_to_disk_as_from_jsonl() {
    for (name, format, k) in TASKS {
        let jsonl = fx(&format!("{name}/{name}.jsonl"));
        let reference = data::load_items(&jsonl, Format::Auto).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reference.len(), 8, "{name}");
        assert_eq!(data::detect_format(&jsonl).unwrap(), format, "{name}");
        for container in [format!("{name}/{name}.parquet"), format!("{name}/{name}.arrow"), format!("{name}/save_to_disk")] {
            let p = fx(&container);
            assert_eq!(data::detect_format(&p).unwrap(), format, "{container}");
            let items = data::load_items(&p, Format::Auto).unwrap_or_else(|e| panic!("{container}: {e}"));
            assert_eq!(strip_ids(&items), strip_ids(&reference), "{container}");
            assert!(items.iter().all(|i| i.num_choices() <= k && i.prompt.ends_with("\nAnswer:")), "{container}");
            // Explicit format too.
            assert_eq!(data::load_items(&p, format).unwrap(), items, "{container}");
            // Ids: the rows' own where they have one, else the file (or folder) and the 0-based row.
            let base = p.file_name().unwrap().to_string_lossy().into_owned();
            for (row, it) in items.iter().enumerate() {
                let own = reference[row].id.clone();
                if own.starts_with(&format!("{name}.jsonl:")) {
                    assert_eq!(it.id, format!("{base}#{row}"), "{container}");
                } else {
                    assert_eq!(it.id, own, "{container}");
                }
            }
        }
    }
}

/// What the real rows say, pinned: the first row of each task as the publishers have it.
#[test]
fn first_rows_are_the_real_items() {
    let first = |name: &str| data::load_items(&fx(&format!("{name}/{name}.parquet")), Format::Auto).unwrap().remove(0);
    let a = first("arc-easy");
    assert_eq!(a.id, "MCAS_2000_4_6");
    assert_eq!(a.choices, vec!["cellular telephone", "television", "refrigerator", "airplane"]);
    assert_eq!(a.label, 0);
    assert!(a.prompt.contains("question: Which technology was developed most recently?\nChoices:\nA. cellular telephone\n"));
    let o = first("obqa");
    assert_eq!((o.id.as_str(), o.label), ("8-376", 0));
    assert!(o.prompt.contains("Frilled sharks and angler fish"), "{}", o.prompt);
    let b = first("boolq");
    assert_eq!((b.label, b.answer_labels.clone()), (1, vec![" True".to_string(), " False".to_string()]));
    assert!(b.prompt.starts_with("Answer the question with only True or False: does ethanol take more energy"));
    let w = first("winogrande");
    assert_eq!((w.choices.clone(), w.label), (vec!["Sarah".to_string(), "Maria".to_string()], 1));
    let m = first("mmlu-college_physics");
    assert_eq!(m.label, 1);
    assert!(m.prompt.contains("quantum efficiency of a photon detector"), "{}", m.prompt);
    let c = first("commonsense_qa");
    assert_eq!((c.choices.len(), c.label), (5, 0));
}

fn err(p: &Path, format: Format) -> String {
    match data::load_items(p, format) {
        Ok(items) => panic!("{}: expected an error, got {} items", p.display(), items.len()),
        Err(e) => e.to_string(),
    }
}

fn has_all(m: &str, needles: &[&str]) {
    for n in needles {
        assert!(m.contains(n), "`{n}` not in: {m}");
    }
}

#[test]
fn bad_tables_are_located_errors() {
    let b = |f: &str| fx(&format!("bad/{f}"));
    has_all(&err(&b("truncated.parquet"), Format::Auto), &["truncated.parquet", "Parquet", "download it again"]);
    has_all(&err(&b("not_parquet.parquet"), Format::Auto), &["not_parquet.parquet", "PAR1"]);
    has_all(&err(&b("truncated.arrow"), Format::Auto), &["truncated.arrow", "Arrow"]);
    has_all(&err(&b("answer_out_of_range.parquet"), Format::Auto), &["answer_out_of_range.parquet, row 1:", "column `answer`", "out of range for 3 choices"]);
    has_all(&err(&b("null_answer.parquet"), Format::Auto), &["null_answer.parquet, row 1:", "column `answer` is missing or null"]);
    has_all(&err(&b("missing_answer.parquet"), Format::Mcq), &["missing_answer.parquet: missing column `answer`", "\"question\", \"choices\""]);
    has_all(
        &err(&b("choices_wrong_type.parquet"), Format::Mcq),
        &["choices_wrong_type.parquet, row 0:", "column `choices` should be a list of strings, found the string \"ice\""],
    );
    has_all(&err(&b("binary_question.parquet"), Format::Mcq), &["binary_question.parquet", "column `question`", "Arrow type Binary"]);
    has_all(&err(&b("unknown_schema.parquet"), Format::Auto), &["unknown_schema.parquet, row 0:", "cannot tell the dataset format", "\"bar\", \"foo\""]);
    has_all(&err(&b("boolq_string_answer.parquet"), Format::Auto), &["boolq_string_answer.parquet, row 0:", "column `answer`", "true or false"]);
    has_all(&err(&b("arc_bad_key.parquet"), Format::Auto), &["arc_bad_key.parquet, row 1:", "`answerKey`", "\"E\""]);
    has_all(&err(&b("state_missing_file"), Format::Auto), &["state_missing_file", "state.json lists data-00000-of-00001.arrow"]);
    has_all(&err(&b("empty_folder"), Format::Auto), &["empty_folder", "no state.json and no .arrow file"]);
    has_all(&err(&b("no_such.parquet"), Format::Auto), &["no_such.parquet", "cannot read the file"]);
    // The good file of the same schema loads (the bad ones differ in one thing each).
    assert_eq!(data::load_items(&b("good.parquet"), Format::Auto).unwrap().len(), 3);
}

#[test]
fn explicit_column_keys_read_other_names() {
    let p = fx("bad/custom_columns.parquet");
    // Without keys the columns say nothing known.
    assert!(err(&p, Format::Auto).contains("cannot tell the dataset format"));
    let cols = ColumnKeys {
        question: Some("prompt".into()),
        choices: Some("options".into()),
        answer: Some("gold".into()),
        id: Some("uid".into()),
        ..Default::default()
    };
    assert_eq!(data::detect_format_with(&p, &cols).unwrap(), Format::Mcq);
    let items = data::load_items_opts(&p, Format::Auto, None, &cols).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!((items[0].id.as_str(), items[0].label, items[1].label), ("c1", 1, 1));
    assert!(items[0].prompt.contains("question: Which is a gas?\nChoices:\nA. ice\nB. steam\n"), "{}", items[0].prompt);
    // A key naming a column the file lacks: the error names the column and the key.
    let wrong = ColumnKeys { answer: Some("label_idx".into()), ..cols.clone() };
    has_all(
        &data::load_items_opts(&p, Format::Auto, None, &wrong).unwrap_err().to_string(),
        &["custom_columns.parquet: missing column `label_idx`", "\"prompt\"", "data.answer_column"],
    );
    // The keys work for JSONL and CSV as well.
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("x.jsonl");
    std::fs::write(&j, "{\"prompt\": \"Q?\", \"options\": [\"a\", \"b\"], \"gold\": \"B\", \"uid\": 7}\n").unwrap();
    let it = data::load_items_opts(&j, Format::Auto, None, &cols).unwrap();
    assert_eq!((it[0].id.as_str(), it[0].label), ("7", 1));
    let c = d.path().join("x.csv");
    std::fs::write(&c, "Prompt,options,gold\nQ?,a|b|c,2\n").unwrap();
    assert_eq!(data::load_items_opts(&c, Format::Auto, None, &cols).unwrap()[0].label, 2);
    // Two keys naming one column are refused.
    let twice = ColumnKeys { question: Some("x".into()), choices: Some("x".into()), ..Default::default() };
    assert!(twice.validate().unwrap_err().contains("both name the column"));
}

/// A DatasetDict folder (splits as sub-folders) is refused with the splits named.
#[test]
fn dataset_dict_folder_names_its_splits() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("dataset_dict.json"), "{\"splits\": [\"train\", \"validation\"]}").unwrap();
    for s in ["train", "validation"] {
        std::fs::create_dir(d.path().join(s)).unwrap();
    }
    has_all(&err(d.path(), Format::Auto), &["DatasetDict", "\"train\", \"validation\"", "one split"]);
}
