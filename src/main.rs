// The engine and simulator allocate a JSON tree per object; mimalloc roughly
// halves the time glibc's malloc took there (profiled on backfill).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tributary::cli::main()
}
