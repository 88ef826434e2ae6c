//! The component's bindings, generated at compile time from `wit/world.wit` with
//! `wit-bindgen`: the world file is the contract, and the code can call only what it
//! declares. Only `io/` and the handler use them.

wit_bindgen::generate!({
    world: "backup",
    path: "wit",
    generate_all,
});
