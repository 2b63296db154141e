//! The Prometheus text exposition format, version 0.0.4: `# HELP` and
//! `# TYPE` lines, then one sample per line, with label values escaped
//! (`\`, `"` and line feed) and histograms as cumulative `_bucket{le=...}`
//! series ending in `+Inf`, then `_sum` and `_count`.

use std::fmt::Write as _;

/// The content type of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind of a metric family, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds one exposition, family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// The `# HELP` and `# TYPE` lines of a family.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape_help(help),
            kind.as_str()
        );
    }

    /// One sample: `name{label="value",...} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        self.out.push_str(&number(value));
        self.out.push('\n');
    }

    /// The series of one histogram: `counts[i]` observations fell at or
    /// below `bounds[i]` (and above the bound before); `overflow` above the
    /// last bound.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        overflow: u64,
        sum: f64,
    ) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (bound, count) in bounds.iter().zip(counts) {
            cumulative += count;
            self.out.push_str(&bucket);
            write_labels(&mut self.out, labels, Some(&number(*bound)));
            let _ = writeln!(self.out, " {cumulative}");
        }
        cumulative += overflow;
        self.out.push_str(&bucket);
        write_labels(&mut self.out, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {cumulative}");
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (name, value) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
    out.push('}');
}

/// `\` → `\\`, `"` → `\"`, line feed → `\n`: the escapes of a label value.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `\` → `\\` and line feed → `\n`: the escapes of a HELP text.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus reads it (`+Inf`, `-Inf`, `NaN`).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.family("t_total", "a \\ help\nline", Kind::Counter);
        e.sample("t_total", &[("tool", "a\"b\\c\nd"), ("grant", "g")], 2.0);
        e.sample("t_total", &[], 0.5);
        assert_eq!(
            e.finish(),
            "# HELP t_total a \\\\ help\\nline\n# TYPE t_total counter\n\
             t_total{tool=\"a\\\"b\\\\c\\nd\",grant=\"g\"} 2\n\
             t_total 0.5\n"
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.000005), "0.000005");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let mut e = Exposition::new();
        e.histogram("h", &[("server", "s")], &[0.1, 1.0], &[2, 3], 1, 4.5);
        assert_eq!(
            e.finish(),
            "h_bucket{server=\"s\",le=\"0.1\"} 2\n\
             h_bucket{server=\"s\",le=\"1\"} 5\n\
             h_bucket{server=\"s\",le=\"+Inf\"} 6\n\
             h_sum{server=\"s\"} 4.5\n\
             h_count{server=\"s\"} 6\n"
        );
        let mut e = Exposition::new();
        e.histogram("h", &[], &[1.0], &[0], 0, 0.0);
        assert_eq!(
            e.finish(),
            "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"
        );
    }
}
