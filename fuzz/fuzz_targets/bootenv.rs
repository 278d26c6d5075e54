//! U-Boot environment copies as read back from storage (after power cuts, or
//! written by other tools): never panic; what parses writes back unchanged.
//! The fuzzer supplies the data areas and flags; valid CRCs are computed here
//! so that the parser's body is reached (with one bit to corrupt a copy).
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_bootenv::{BootEnv, Layout};

const SIZE: usize = 256;

fn copy(flags: u8, data: &[u8], corrupt: bool) -> Vec<u8> {
    let mut area = data.to_vec();
    area.resize(SIZE - 5, 0);
    let mut crc = crc32fast::hash(&area);
    if corrupt {
        crc ^= 1;
    }
    let mut out = crc.to_le_bytes().to_vec();
    out.push(flags);
    out.extend_from_slice(&area);
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (ctl, rest) = data.split_at(3);
    let half = rest.len().min(2 * (SIZE - 5)) / 2;
    let a = copy(ctl[0], &rest[..half], ctl[2] & 1 != 0);
    let b = copy(ctl[1], &rest[half..half * 2], ctl[2] & 2 != 0);
    let layout = Layout {
        size: SIZE,
        redundant: true,
    };
    if let Ok(mut env) = BootEnv::parse(&[&a, &b], layout) {
        let vars = env.vars().clone();
        let _ = env.boot();
        let env2 = BootEnv::parse(&[&a, &b], layout).expect("reparse");
        if let Ok((i, bytes)) = env2.next_write() {
            let mut copies = [a.clone(), b.clone()];
            copies[i] = bytes;
            let back = BootEnv::parse(&[&copies[0], &copies[1]], layout).expect("own write");
            assert_eq!(back.vars(), &vars);
        }
    }
});
