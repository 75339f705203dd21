from emulator.wait import wait_until


def test_the_first_truthy_answer_is_returned():
    answers = iter([None, 0, "", {"state": "Completed"}])
    assert wait_until(lambda: next(answers), timeout=30, interval=0) == {"state": "Completed"}


def test_at_the_deadline_it_looks_once_more_then_gives_up():
    looks = []
    assert wait_until(lambda: looks.append(1), timeout=0.05, interval=0.01) is None
    assert len(looks) >= 2  # the first look and the one at the deadline


def test_a_stop_ends_the_wait_after_one_look():
    looks = []
    assert wait_until(lambda: looks.append(1), timeout=30, stopped=lambda: True) is None
    assert looks == [1]
