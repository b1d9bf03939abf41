fn main(){ println!("{}", sharedserver::hello()); }
