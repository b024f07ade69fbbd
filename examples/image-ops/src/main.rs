//! CGI-style entry point: `QUERY_STRING` selects the operation, stdin carries
//! the image, stdout receives the result. See the crate docs in `lib.rs`.

use std::io::Write;
use std::process::ExitCode;

use image_ops::{Error, MAX_INPUT_BYTES, parse_query, process, read_capped};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-ops: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run() -> Result<(), Error> {
    let query = match std::env::var_os("QUERY_STRING") {
        None => String::new(),
        Some(q) => q
            .into_string()
            .map_err(|_| Error::BadInput("QUERY_STRING is not valid UTF-8".into()))?,
    };
    // Parse first so a bad request fails before we buffer up to 64 MiB of stdin.
    let request = parse_query(&query)?;
    let input = read_capped(std::io::stdin().lock(), MAX_INPUT_BYTES)?;
    let output = process(&request, &input)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&output)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Internal(format!("writing output: {e}")))
}
