#![deny(unsafe_code)]

fn main() {
    std::process::exit(haconiwa::cli::main());
}
