"""Small assertion helpers shared by the integration tests."""
import psycopg2


def expect_sqlstate(cur, sql, code, args=None):
    """Run sql and assert it fails with SQLSTATE `code`. Returns the exception."""
    try:
        if args is None:
            cur.execute(sql)
        else:
            cur.execute(sql, args)
    except psycopg2.Error as e:
        assert e.pgcode == code, ("%r: expected SQLSTATE %s, got %s: %s"
                                  % (sql, code, e.pgcode, str(e).strip()))
        return e
    raise AssertionError("%r: expected SQLSTATE %s, but it succeeded (status %r)"
                         % (sql, code, cur.statusmessage))


def one(cur, sql, args=None):
    cur.execute(sql, args)
    rows = cur.fetchall()
    assert len(rows) == 1, "%r returned %d rows" % (sql, len(rows))
    return rows[0][0] if len(rows[0]) == 1 else rows[0]


def col(cur, sql, args=None):
    cur.execute(sql, args)
    return [r[0] for r in cur.fetchall()]
