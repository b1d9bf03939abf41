//! Resident memory of an idle watcher.

/// Keep the idle watcher's resident set to the code it really runs.
///
/// By default each page fault maps up to 64 KiB of neighbouring pages
/// ("fault-around"), so start-up leaves most of the binary and of libc
/// resident for a process that then idles for hours. We turn fault-around off
/// for our read-only file mappings (MADV_RANDOM) and drop the code pages
/// mapped so far (MADV_DONTNEED). That is safe only for executable mappings:
/// they are never written, so dropping them loses nothing and the pages
/// simply fault back in, one at a time, when they run again.
pub fn trim_resident_code() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if !path.starts_with('/') || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let (addr, len) = (start as *mut libc::c_void, end - start);
        // SAFETY: the range is one of our own read-only file mappings;
        // DONTNEED is applied to unwritable code only (see above).
        unsafe {
            libc::madvise(addr, len, libc::MADV_RANDOM);
            if perms.contains('x') {
                libc::madvise(addr, len, libc::MADV_DONTNEED);
            }
        }
    }
}
