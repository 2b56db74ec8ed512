// The engine and simulator allocate a JSON tree per object; mimalloc roughly
// halves the time glibc's malloc took there (profiled on backfill). Built
// without transparent huge pages (`no_thp`): with them, what a backfill
// touched stayed resident in 2 MB pages (catalogue backfill peak RSS 211 MB
// with, 158 MB without, at the same rate; measured).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tributary::cli::main()
}
