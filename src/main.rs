fn main() {
    println!("rolelb: being written");
}
