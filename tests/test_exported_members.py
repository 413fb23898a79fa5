import davfs


def test_all_lists_exactly_the_public_api():
    public = {name for name in dir(davfs) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(davfs, name)).__name__ == "module"}
    assert set(davfs.__all__) == public - modules
