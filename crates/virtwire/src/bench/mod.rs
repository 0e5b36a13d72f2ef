//! Benchmark commands. Each prints a table, or with `--json` one JSON array.

pub mod ring;

/// Prints rows as an aligned text table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{:>width$}", c, width = w[i])).collect();
        println!("{}", s.join("  "));
    };
    line(headers.to_vec());
    line(w.iter().map(|n| "-".repeat(*n)).collect::<Vec<_>>().iter().map(|s| s.as_str()).collect());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}
