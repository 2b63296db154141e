//! Classifies the labelled set of real MCP tools in `data/labelled-tools.jsonl`
//! and prints a per-category precision/recall table:
//! `cargo test -p toolgate-scan --test accuracy -- --nocapture`.
//! Fails when overall accuracy is below 90% or a Destructive or Financial
//! tool is classified Read.

use serde_json::Value;
use toolgate_scan::{classify, Category};

const CATEGORIES: [Category; 6] = [
    Category::Read,
    Category::Write,
    Category::Execute,
    Category::Destructive,
    Category::Financial,
    Category::Other,
];

fn parse_label(s: &str) -> Category {
    serde_json::from_value(Value::String(s.to_string()))
        .unwrap_or_else(|_| panic!("unknown label {s}"))
}

#[test]
fn labelled_set_accuracy() {
    let data = include_str!("../data/labelled-tools.jsonl");
    let mut rows = Vec::new();
    for (i, line) in data
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let tool: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        let label = parse_label(tool["label"].as_str().expect("label"));
        let got = classify(&tool);
        rows.push((tool, label, got));
    }

    println!(
        "\n{:<12} {:>6} {:>6} {:>6} {:>9} {:>7}",
        "category", "label", "got", "right", "precision", "recall"
    );
    for c in CATEGORIES {
        let labelled = rows.iter().filter(|r| r.1 == c).count();
        let predicted = rows.iter().filter(|r| r.2.category == c).count();
        let right = rows
            .iter()
            .filter(|r| r.1 == c && r.2.category == c)
            .count();
        let pct = |n: usize, d: usize| {
            if d == 0 {
                "-".to_string()
            } else {
                format!("{:.1}%", 100.0 * n as f64 / d as f64)
            }
        };
        println!(
            "{:<12} {:>6} {:>6} {:>6} {:>9} {:>7}",
            format!("{c:?}"),
            labelled,
            predicted,
            right,
            pct(right, predicted),
            pct(right, labelled)
        );
    }
    let right = rows.iter().filter(|r| r.1 == r.2.category).count();
    let accuracy = right as f64 / rows.len() as f64;
    println!(
        "overall: {right}/{} = {:.1}%\n",
        rows.len(),
        100.0 * accuracy
    );
    println!("misclassified:");
    for (tool, label, got) in rows.iter().filter(|r| r.1 != r.2.category) {
        println!(
            "  {}/{}: labelled {label:?}, got {:?} ({})",
            tool["server"].as_str().unwrap_or(""),
            tool["name"].as_str().unwrap_or(""),
            got.category,
            got.evidence
                .iter()
                .map(|e| e.detail.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    let dangerous_as_read: Vec<_> = rows
        .iter()
        .filter(|r| {
            matches!(r.1, Category::Destructive | Category::Financial)
                && r.2.category == Category::Read
        })
        .map(|r| r.0["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        dangerous_as_read.is_empty(),
        "Destructive/Financial tools classified Read: {dangerous_as_read:?}"
    );
    assert!(
        rows.len() >= 300,
        "the labelled set has {} tools",
        rows.len()
    );
    assert!(
        accuracy >= 0.90,
        "accuracy {:.1}% is below 90%",
        100.0 * accuracy
    );
}
