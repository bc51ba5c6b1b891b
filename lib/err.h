/* Error codes shared by every module: 0 is success, everything else is one of these. */
#ifndef PQ_LIB_ERR_H
#define PQ_LIB_ERR_H

#define ERR_MSG_LEN 256

enum {
	ERR_OK = 0,
	ERR_NOMEM,          /* out of memory */
	ERR_PROTO,          /* protocol violation by a peer or client */
	ERR_NOTLEADER,      /* this node is not the leader; nothing was proposed */
	ERR_LEADERSHIP_LOST,/* leadership lost after proposing: outcome unknown */
	ERR_IO,             /* local I/O error */
	ERR_CORRUPT,        /* malformed or corrupt encoded data */
	ERR_SQL,            /* SQLite reported an error; details on the session */
	ERR_BUSY,           /* a resource is held by someone else */
	ERR_TIMEOUT,        /* a wait ran past its deadline */
	ERR_NOTFOUND,       /* no such object (database, file, ...) */
	ERR_EXISTS,         /* object already exists */
	ERR_INVALID,        /* invalid argument or configuration */
	ERR_SHUTDOWN,       /* the node is shutting down */
	ERR_FULL,           /* a memory or disk cap would be exceeded */
	ERR_INUSE,          /* object in use by other sessions */
	ERR__COUNT
};

/* Return a static, human-readable name for an error code. */
const char *err_str(int code);

#endif
