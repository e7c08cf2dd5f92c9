//! Test harness macros.

/// Defines a CLI test: `pqtest!(name, |dir, cmd| { .. })` runs the body with a fresh temporary
/// folder and a `phiquant` command builder whose working directory is the repository root.
macro_rules! pqtest {
    ($name:ident, |$dir:ident, $cmd:ident| $body:block) => {
        #[test]
        fn $name() {
            let $dir = crate::util::Dir::new(stringify!($name));
            #[allow(unused_mut)]
            let mut $cmd = $dir.command();
            $body
        }
    };
}

/// Asserts two strings are equal, printing both in full when they differ.
#[allow(unused_macros)]
macro_rules! eqnice {
    ($expected:expr, $got:expr) => {{
        let expected: &str = &$expected;
        let got: &str = &$got;
        if expected != got {
            panic!("\nexpected:\n{expected}\n----\ngot:\n{got}\n----");
        }
    }};
}
