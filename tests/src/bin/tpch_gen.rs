//! Streams one TPC-H table as PostgreSQL COPY text (`|`-delimited), generated in-process by the
//! `tpchgen` crate: `tpch_gen <table> <scale factor>`. Used by `scripts/tpch-rounds.sh`.

use std::fmt::Display;
use std::io::{BufWriter, Write};

use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};

/// tpchgen prints rows as `.tbl` lines, with a trailing `|` that COPY would read as a column.
fn emit<T: Display>(rows: impl IntoIterator<Item = T>) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut line = String::new();
    for row in rows {
        line.clear();
        std::fmt::Write::write_fmt(&mut line, format_args!("{row}")).expect("writing to a String");
        let line = line.strip_suffix('|').unwrap_or(&line);
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tpch_gen <region|nation|part|supplier|partsupp|customer|orders|lineitem> <scale factor>";
    let (Some(table), Some(sf)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let sf: f64 = match sf.parse() {
        Ok(v) if v > 0.0 && v <= 1000.0 => v,
        _ => {
            eprintln!("tpch_gen: scale factor '{sf}' is not a number in (0, 1000]");
            std::process::exit(2);
        }
    };
    let result = match table.as_str() {
        "region" => emit(RegionGenerator::new(sf, 1, 1)),
        "nation" => emit(NationGenerator::new(sf, 1, 1)),
        "part" => emit(PartGenerator::new(sf, 1, 1)),
        "supplier" => emit(SupplierGenerator::new(sf, 1, 1)),
        "partsupp" => emit(PartSuppGenerator::new(sf, 1, 1)),
        "customer" => emit(CustomerGenerator::new(sf, 1, 1)),
        "orders" => emit(OrderGenerator::new(sf, 1, 1)),
        "lineitem" => emit(LineItemGenerator::new(sf, 1, 1)),
        other => {
            eprintln!("tpch_gen: unknown table '{other}'; {usage}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        // A closed pipe (the reader stopped) is the reader's error to report.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("tpch_gen: writing {table}: {e}");
            std::process::exit(1);
        }
    }
}
