/* Human-readable names for the error codes of err.h. */
#include "err.h"

const char *err_str(int code)
{
	static const char *const names[ERR__COUNT] = {
		[ERR_OK] = "success",
		[ERR_NOMEM] = "out of memory",
		[ERR_PROTO] = "protocol violation",
		[ERR_NOTLEADER] = "not the leader",
		[ERR_LEADERSHIP_LOST] = "leadership lost",
		[ERR_IO] = "I/O error",
		[ERR_CORRUPT] = "corrupt data",
		[ERR_SQL] = "SQL error",
		[ERR_BUSY] = "busy",
		[ERR_TIMEOUT] = "timed out",
		[ERR_NOTFOUND] = "not found",
		[ERR_EXISTS] = "already exists",
		[ERR_INVALID] = "invalid argument",
		[ERR_SHUTDOWN] = "shutting down",
		[ERR_FULL] = "capacity exceeded",
		[ERR_INUSE] = "in use",
	};
	if (code < 0 || code >= ERR__COUNT || names[code] == 0)
		return "unknown error";
	return names[code];
}
