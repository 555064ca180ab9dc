//! The catalogue itself: every row starts a working pair (1,000 frames, the two
//! summaries agree), so the fault tests built on it start from a known good.

use ipc_common::testkit::{LIMIT, TestDir};
use ipc_faults::MECHANISMS;

#[test]
fn every_row_of_the_catalogue_moves_frames_intact() {
    for m in MECHANISMS {
        let dir = TestDir::new(&format!("catalog-{}", m.name.replace(' ', "-")));
        let pair =
            m.start(&dir, &["--count", "1000", "--size", "0..4K"], &["--count", "1000"], LIMIT);
        let w = pair.writer.finish();
        let r = pair.reader.finish();
        w.expect(0);
        r.expect(0);
        let (ws, rs) = (w.summary(), r.summary());
        assert_eq!(
            (ws.messages, ws.digest.clone()),
            (rs.messages, rs.digest.clone()),
            "{}",
            m.name
        );
        assert_eq!(rs.messages, 1000, "{}", m.name);
        dir.assert_clean();
    }
}
