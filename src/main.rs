fn main() -> std::process::ExitCode {
    s3dock::cli::main()
}
