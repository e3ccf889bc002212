"""The commands' console lines (spikerir_plugin/utils/console.py): results on stdout, progress lines and notices on
stderr, each written whole above a progress bar that is drawing, to the streams in place at the call."""
from spikerir_plugin.utils import console


def test_lines_go_to_their_streams_above_a_drawing_bar(capsys):
    bar = console.progress(total=3, desc='work', mininterval=0)
    bar.update(1)
    console.info('result 1')
    console.warn('skipped a.png')
    console.status('[1/2] stage done')
    bar.update(2)
    bar.close()
    out, err = capsys.readouterr()
    assert out == 'result 1\n'  # nothing of the bar in the results
    assert 'work' in err and '3/3' in err
    lines = err.replace('\r', '\n').splitlines()
    assert 'skipped a.png' in lines and '[1/2] stage done' in lines  # whole lines, not glued to the bar
    assert err.index('skipped a.png') < err.index('[1/2] stage done') < err.index('3/3')
