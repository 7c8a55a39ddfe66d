pub fn run() -> crate::Res { Ok(()) }
