"""The backing-file pattern: distinct per sector and per word, mismatches explained."""

from conformance.pattern import describe_mismatch, pattern, sector_pattern, write_pattern_file


def test_every_word_names_its_sector_and_position():
    s = sector_pattern(5)
    assert len(s) == 512
    assert int.from_bytes(s[8:16], "little") == (5 << 8) | 1
    assert sector_pattern(5) != sector_pattern(6)


def test_mismatch_names_sector_and_source():
    expected = pattern(10, 2)
    actual = pattern(10, 1) + sector_pattern(12)
    msg = describe_mismatch(expected, actual, base_offset=10 * 512)
    assert "sector 11" in msg and "LBA 12" in msg


def test_file_matches_pattern(tmp_path):
    path = tmp_path / "disk.img"
    write_pattern_file(path, 3000 * 512, chunk_sectors=1000)
    data = path.read_bytes()
    assert len(data) == 3000 * 512
    assert data[2999 * 512:] == sector_pattern(2999)
