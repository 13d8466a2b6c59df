//! A `SweepReport` as Markdown (printed and `report.md`), CSV (`report.csv`,
//! `report-vs-map.csv`: one row per evaluation set, setting and method, full precision) and
//! LaTeX (`report.tex`: the paper's layout, methods down, settings across, a block per metric;
//! needs `\usepackage{booktabs}`).

use super::report::{Row, Stats, SweepReport, METRICS, TEST_SET};
use crate::runio::write_atomic;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// "0.713 ± 0.012" ("+0.013 ± 0.004" when `signed`), "(n=2)" added where a cell has fewer seeds
/// than its setting (`full`).
fn pm(s: &Option<Stats>, full: usize, signed: bool) -> String {
    let Some(s) = s else { return "–".into() };
    let mean = if signed { format!("{:+.3}", s.mean) } else { format!("{:.3}", s.mean) };
    let mut t = match s.sd {
        Some(sd) => format!("{mean} ± {sd:.3}"),
        None => mean,
    };
    if s.n < full {
        t.push_str(&format!(" (n={})", s.n));
    }
    t
}

fn eval_title(e: &str) -> String {
    if e == TEST_SET {
        "the test set".into()
    } else {
        format!("the shift set `{e}`")
    }
}

/// The rows of one evaluation set as a grid: methods down, settings across.
fn grid<'a>(r: &'a SweepReport, eval: &str) -> Vec<(&'a str, Vec<Option<&'a Row>>)> {
    r.methods
        .iter()
        .filter(|m| r.rows.iter().any(|x| x.eval == eval && &x.method == *m))
        .map(|m| (m.as_str(), (0..r.settings.len()).map(|s| r.row(eval, s, m)).collect()))
        .collect()
}

fn seeds_phrase(r: &SweepReport) -> String {
    match &r.replicate_axis {
        Some(a) => {
            let counts: std::collections::BTreeSet<usize> = r.settings.iter().map(|s| s.replicates.len()).collect();
            let c: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
            let spread = if counts.iter().all(|&c| c < 2) { "; no spread with one seed" } else { "" };
            format!("over {} seeds per setting (axis `{a}`{spread})", c.join(" or "))
        }
        None => "of single runs (the sweep has no seed axis, so no spread)".into(),
    }
}

pub fn markdown(r: &SweepReport) -> String {
    let mut o = String::new();
    let finished: usize = r.settings.iter().map(|s| s.runs.len()).sum();
    o.push_str(&format!("# Sweep `{}`\n\n", r.name));
    o.push_str(&format!(
        "{finished} of {} runs in the table. Mean ± standard deviation {}; the standard deviation is the sample one (n − 1 denominator). \
Columns: {}. (n=k) marks a cell with fewer seeds than its setting.\n",
        r.runs.len(),
        seeds_phrase(r),
        r.setting_columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
    ));
    let header = |o: &mut String| {
        o.push_str("| method |");
        for s in &r.settings {
            o.push_str(&format!(" {} |", s.title()));
        }
        o.push_str("\n|---|");
        o.push_str(&"---|".repeat(r.settings.len()));
        o.push('\n');
    };
    for eval in &r.eval_sets {
        let g = grid(r, eval);
        o.push_str(&format!("\n## {}\n", eval_title(eval).replacen("the", "The", 1)));
        for (j, (_, head, up)) in METRICS.iter().enumerate() {
            o.push_str(&format!("\n### {head} ({} is better)\n\n", if *up { "higher" } else { "lower" }));
            header(&mut o);
            for (m, cells) in &g {
                o.push_str(&format!("| {m} |"));
                for (s, c) in cells.iter().enumerate() {
                    o.push_str(&format!(" {} |", c.map(|c| pm(&c.metrics[j], r.settings[s].replicates.len(), false)).unwrap_or_else(|| "–".into())));
                }
                o.push('\n');
            }
        }
        if g.iter().any(|(m, _)| *m == "map") {
            o.push_str(&format!("\n## Difference to MAP on {} (method − MAP, paired by seed, then mean ± sd)\n", eval_title(eval)));
            for (j, (_, head, up)) in METRICS.iter().enumerate() {
                o.push_str(&format!("\n### Δ{head} ({} is better)\n\n", if *up { "positive" } else { "negative" }));
                header(&mut o);
                for (m, cells) in g.iter().filter(|(m, _)| *m != "map") {
                    o.push_str(&format!("| {m} |"));
                    for (s, c) in cells.iter().enumerate() {
                        o.push_str(&format!(" {} |", c.map(|c| pm(&c.vs_map[j], r.settings[s].replicates.len(), true)).unwrap_or_else(|| "–".into())));
                    }
                    o.push('\n');
                }
            }
        }
    }
    if !r.missing.is_empty() {
        o.push_str("\n## Runs not in the table\n\n");
        for (n, why) in &r.missing {
            o.push_str(&format!("- `{n}`: {why}\n"));
        }
    }
    for n in &r.notes {
        o.push_str(&format!("\nNote: {n}\n"));
    }
    o
}

fn num(x: f64) -> String {
    format!("{x}")
}

fn csv_table(r: &SweepReport, diff: bool) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head: Vec<String> = vec!["eval".into()];
    head.extend(r.setting_columns.iter().cloned());
    head.extend(["method".to_string(), "n".to_string()]);
    for (k, _, _) in METRICS {
        let k = if diff { format!("{k}_minus_map") } else { k.to_string() };
        head.push(format!("{k}_mean"));
        head.push(format!("{k}_sd"));
    }
    w.write_record(&head)?;
    for row in &r.rows {
        let stats = if diff { &row.vs_map } else { &row.metrics };
        if diff && row.method == "map" {
            continue;
        }
        let n = stats.iter().flatten().map(|s| s.n).max().unwrap_or(0);
        if diff && n == 0 {
            continue;
        }
        let mut rec: Vec<String> = vec![row.eval.clone()];
        rec.extend(r.settings[row.setting].labels.iter().map(|(_, l)| l.clone()));
        rec.push(row.method.clone());
        rec.push(n.to_string());
        for s in stats {
            rec.push(s.as_ref().map(|s| num(s.mean)).unwrap_or_default());
            rec.push(s.as_ref().and_then(|s| s.sd).map(num).unwrap_or_default());
        }
        w.write_record(&rec)?;
    }
    Ok(String::from_utf8(w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?)
}

/// `report.csv` and `report-vs-map.csv`.
pub fn csv(r: &SweepReport) -> Result<(String, String)> {
    Ok((csv_table(r, false)?, csv_table(r, true)?))
}

fn tex_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\textbackslash{}"),
            '_' | '%' | '&' | '#' | '$' | '{' | '}' => {
                o.push('\\');
                o.push(c);
            }
            '~' => o.push_str("\\textasciitilde{}"),
            '^' => o.push_str("\\textasciicircum{}"),
            _ => o.push(c),
        }
    }
    o
}

/// The names the paper's tables use.
fn tex_method(m: &str) -> String {
    match m {
        "zero_shot" => "Zero-shot".into(),
        "map" => "MAP".into(),
        "temperature" => "Temperature".into(),
        "llla" => "LLLA".into(),
        "laplace" => "Laplace-LoRA".into(),
        "mc_dropout" => "MC dropout".into(),
        "checkpoint_ensemble" => "Checkpoint ens.".into(),
        "deep_ensemble" => "Deep ensemble".into(),
        "blob" => "BLoB".into(),
        other => tex_escape(other),
    }
}

fn tex_cell(s: &Option<Stats>, signed: bool) -> String {
    match s {
        None => "--".into(),
        Some(s) => {
            let m = if signed { format!("{:+.3}", s.mean) } else { format!("{:.3}", s.mean) };
            match s.sd {
                Some(sd) => format!("${m}_{{\\pm {sd:.3}}}$"),
                None => format!("${m}$"),
            }
        }
    }
}

pub fn latex(r: &SweepReport) -> String {
    let mut o = String::new();
    o.push_str(&format!("% Written by `laplace-lora report` for the sweep {}; needs \\usepackage{{booktabs}}.\n", tex_escape(&r.name)));
    let cols = r.settings.len();
    for eval in &r.eval_sets {
        let g = grid(r, eval);
        for diff in [false, true] {
            if diff && !g.iter().any(|(m, _)| *m == "map") {
                continue;
            }
            let what = if diff { "difference to MAP (paired by seed)" } else { "mean" };
            o.push_str("\\begin{table}[t]\n\\centering\n\\small\n");
            o.push_str(&format!(
                "\\caption{{Sweep {}, {}: {what} $\\pm$ standard deviation {} (sample standard deviation, $n-1$).}}\n",
                tex_escape(&r.name),
                tex_escape(&eval_title(eval).replace('`', "")),
                tex_escape(&seeds_phrase(r).replace('`', ""))
            ));
            o.push_str(&format!("\\begin{{tabular}}{{l{}}}\n\\toprule\nMethod", "c".repeat(cols)));
            for s in &r.settings {
                o.push_str(&format!(" & {}", tex_escape(&s.title())));
            }
            o.push_str(" \\\\\n");
            for (j, (_, head, up)) in METRICS.iter().enumerate() {
                let arrow = if *up { "\\uparrow" } else { "\\downarrow" };
                let name = if diff { format!("$\\Delta$ {head}") } else { head.to_string() };
                o.push_str(&format!("\\midrule\n\\multicolumn{{{}}}{{l}}{{\\textit{{{name}}} ${arrow}$}} \\\\\n", cols + 1));
                for (m, cells) in g.iter().filter(|(m, _)| !diff || *m != "map") {
                    o.push_str(&tex_method(m));
                    for c in cells {
                        let s = c.and_then(|c| if diff { c.vs_map[j].clone() } else { c.metrics[j].clone() });
                        o.push_str(&format!(" & {}", tex_cell(&s, diff)));
                    }
                    o.push_str(" \\\\\n");
                }
            }
            o.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n\n");
        }
    }
    o
}

/// Writes report.md, report.csv, report-vs-map.csv and report.tex into the sweep folder.
pub fn write_files(dir: &Path, r: &SweepReport) -> Result<Vec<PathBuf>> {
    let (csv_a, csv_b) = csv(r)?;
    let files = [("report.md", markdown(r)), ("report.csv", csv_a), ("report-vs-map.csv", csv_b), ("report.tex", latex(r))];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        write_atomic(&p, text.as_bytes())?;
        out.push(p);
    }
    Ok(out)
}
