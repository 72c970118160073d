// Package v1 stands in for distribution-spec's specs-go/v1, which Debian
// does not package: the conformance suite uses only the tag list body.
// Written for Wharf's tests from the OCI distribution spec's description of
// GET /v2/<name>/tags/list.
package v1

// TagList is the response body of the tag listing endpoint.
type TagList struct {
	// Name is the repository's name.
	Name string `json:"name"`
	// Tags are the repository's tags.
	Tags []string `json:"tags"`
}
