//! The plain-text tables of the commands that list things (`approvals
//! list`, `audit query`): every column as wide as its widest cell, two
//! spaces apart, the last column unpadded, each line's end trimmed.

use std::io::Write;

/// Writes `rows` (the header first) as a table.
pub fn write_rows<R: AsRef<[String]>>(out: &mut impl Write, rows: &[R]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(w),
                None => widths.push(w),
            }
        }
    }
    for row in rows {
        let row = row.as_ref();
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
