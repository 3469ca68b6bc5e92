fn main() {
    std::process::exit(haconiwa::cli::main());
}
