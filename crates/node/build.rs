//! Node addons resolve Node's symbols when loaded; napi-build sets the linker flags that allow it.
fn main() {
    napi_build::setup();
}
