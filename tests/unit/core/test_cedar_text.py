from tenantgate.core.cedar_text import split_statements


def test_statements_report_their_starting_line_and_column():
    text = '// header\n\n@id("a")\npermit(principal, action, resource);\n  forbid(principal, action, resource);\n'
    stmts = split_statements(text)
    assert [(s.line, s.column) for s in stmts] == [(3, 1), (5, 3)]
    assert stmts[0].text.startswith('@id("a")') and stmts[0].text.endswith(";")


def test_semicolons_inside_strings_and_comments_do_not_split():
    text = ('permit(principal, action, resource) when { context.x == "a;b\\";c" }; // x;y\n'
            'forbid(principal, action, resource);')
    stmts = split_statements(text)
    assert len(stmts) == 2
    assert stmts[1].line == 2


def test_a_trailing_fragment_without_semicolon_is_a_statement():
    stmts = split_statements("permit(principal, action, resource);\npermit(principal")
    assert [s.line for s in stmts] == [1, 2]


def test_a_carriage_return_ends_a_comment_as_it_does_for_cedar():
    # Cedar ends `//` at `\r`: the permit after it is a policy, so it must be a statement of its own.
    text = ('// hidden\rpermit(principal, action, resource);\r\nforbid(principal, action, resource);'
            '\r  @id("c") permit(principal, action, resource);')
    stmts = split_statements(text)
    assert [s.text for s in stmts] == ["permit(principal, action, resource);", "forbid(principal, action, resource);",
                                       '@id("c") permit(principal, action, resource);']
    assert [(s.line, s.column) for s in stmts] == [(2, 1), (3, 1), (4, 3)]


def test_line_numbers_count_crlf_once_and_a_lone_cr_as_a_break():
    text = "permit(principal, action, resource);\r\n\r\n\rforbid(principal, action, resource);\n\r\npermit(principal"
    assert [s.line for s in split_statements(text)] == [1, 4, 6]
