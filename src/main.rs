fn main() -> std::process::ExitCode {
    tributary::cli::main()
}
